"""Developer and CI sessions.

    nox -s tests     install everything (editable) and run the whole test suite
    nox -s serve     install and start the server; a tiny demo model unless MODEL_PATH is set
    nox -s lint      ruff
    nox -s bench     backend benchmarks
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
PACKAGES = ["flashtts-core", "flashtts-backends[torch]", "flashtts-spark", "flashtts-orpheus", "flashtts-mega"]
# The CPU build of torch; a newer or unpinned torch pulls a multi-GB CUDA build.
TORCH = "torch==2.13.0"


def install_project(session: nox.Session, *extras: str) -> None:
    session.install(TORCH)
    args = []
    for pkg in PACKAGES:
        name, _, extra = pkg.partition("[")
        args += ["-e", f"packages/{name}" + (f"[{extra}" if extra else "")]
    server_extras = ",".join(("dev",) + extras)
    args += ["-e", f"packages/flashtts-server[{server_extras}]"]
    session.install(*args)


@nox.session
def tests(session: nox.Session) -> None:
    """Install the project with every backend that installs here, then run all tests."""
    install_project(session)
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]))


@nox.session
def serve(session: nox.Session) -> None:
    """Start the server: MODEL_PATH/BACKEND from the environment, else a tiny demo Spark model."""
    install_project(session)
    model = os.environ.get("MODEL_PATH")
    if not model:
        model = str(ROOT / "demo-model")
        if not (Path(model) / "LLM").is_dir():
            session.run("flashtts", "tiny-model", "spark", model, "--force")
    backend = os.environ.get("BACKEND", "torch")
    session.run("flashtts", "serve", "--model_path", model, "--backend", backend, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "packages", "tests", "bench")


@nox.session
def bench(session: nox.Session) -> None:
    install_project(session)
    session.run("python", "bench/backends.py", *session.posargs)
