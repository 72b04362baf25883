"""No import cycles among the modules of the six distributions.

Every module of packages/*/src is parsed with ``ast``; each ``import`` and ``from … import`` in it,
at module level or inside a function or method (a deferred import that dodges a cycle is still one),
adds an edge to the module of ours it names. Imports under ``if TYPE_CHECKING:`` never run and are
left out. A cycle is a strongly connected component of more than one module (or a module that
imports itself); the failure lists each one with the import lines that close it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for p in (ROOT / "packages").glob("*/src") if p.is_dir())
DISTRIBUTIONS = 6


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of every package under packages/*/src."""
    found: dict[str, Path] = {}
    for src in SOURCES:
        for path in src.rglob("*.py"):
            parts = list(path.relative_to(src).with_suffix("").parts)
            if any(".egg-info" in p for p in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node that runs (anywhere, but not under ``if TYPE_CHECKING:``)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict) -> set[str]:
    """The modules of ours ``node`` (in ``module``) imports: ``from .a import b`` is ``a.b`` where b
    is a submodule, else ``a``."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return {_deepest(name, modules) for name in names if _deepest(name, modules)}
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    found = set()
    for alias in node.names:
        sub = f"{prefix}.{alias.name}"
        target = sub if sub in modules else _deepest(prefix, modules)
        if target:
            found.add(target)
    return found


def _deepest(name: str, modules: dict) -> str | None:
    """``name`` if it is one of our modules, else its closest enclosing module of ours."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, dict[str, list[int]]]:
    """module -> {imported module of ours -> line numbers}."""
    modules = _modules()
    graph: dict[str, dict[str, list[int]]] = {m: {} for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            for target in _targets(node, module, path.name == "__init__.py", modules):
                if target != module:  # ``from . import name`` in a package's __init__ names itself
                    graph[module].setdefault(target, []).append(node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """The strongly connected components that are cycles (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:  # iterative: the graph is a few hundred modules deep at most
        nonlocal counter
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def _describe(component: list[str], graph) -> str:
    members = set(component)
    lines = [" <-> ".join(component)]
    for module in component:
        for target, linenos in sorted(graph[module].items()):
            if target in members:
                lines.append(f"    {module} imports {target} (line {', '.join(map(str, linenos))})")
    return "\n".join(lines)


def test_the_six_distributions_have_no_import_cycle():
    assert len(SOURCES) == DISTRIBUTIONS, SOURCES
    graph = import_graph()
    # The graph is really read: deferred imports inside functions are edges too.
    assert "flashtts_core.options" in graph["flashtts_backends.options"]
    assert "flashtts_server.runner" in graph["flashtts_server.cli"]  # inside cmd_serve
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_describe(c, graph) for c in found)


def test_the_cycle_finder_finds_a_deferred_import_cycle():
    graph = {"a": {"b": [3]}, "b": {"c": [5]}, "c": {"a": [9]}, "d": {"a": [1]}, "e": {"e": [2]}}
    assert cycles(graph) == [["a", "b", "c"], ["e"]]
