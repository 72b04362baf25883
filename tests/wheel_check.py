"""What a user's `pip install` of the built wheels gives (run by `nox -s wheels`, outside the checkout).

    python tests/wheel_check.py WORKDIR

Checks that the packages come from the installed wheels (not from the source tree), that every
plugin loads through its entry point, that the files the wheels must carry are there (the web page,
MegaTTS3's phone table), and that a tiny Spark model written by `flashtts tiny-model` speaks through
`flashtts infer`. Exits non-zero with the reason on the first failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

ENGINES = {"spark", "orpheus", "mega"}
PACKAGES = [
    "flashtts_core",
    "flashtts_backends",
    "flashtts_spark",
    "flashtts_orpheus",
    "flashtts_mega",
    "flashtts_server",
]
DATA_FILES = [("flashtts_server", "static/index.html"), ("flashtts_mega", "phones.json")]


def fail(message: str) -> None:
    print(f"wheel check FAILED: {message}", file=sys.stderr)
    raise SystemExit(1)


def flashtts(*args: str) -> str:
    done = subprocess.run(["flashtts", *args], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        fail(f"`flashtts {' '.join(args)}` exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def main(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        module = __import__(name)
        where = Path(module.__file__).resolve()
        if "site-packages" not in where.parts:
            fail(f"{name} is imported from {where}, not from an installed wheel")
    for package, relative in DATA_FILES:
        if not resources.files(package).joinpath(relative).is_file():
            fail(f"the {package} wheel lacks {relative}")

    plugins = json.loads(flashtts("plugins", "--json"))
    broken = {p["name"]: p["error"] for p in plugins if p["error"]}
    if broken:
        fail(f"plugins failed to load: {broken}")
    engines = {e for p in plugins for e in p["engines"]}
    backends = {b for p in plugins for b in p["backends"]}
    if not engines >= ENGINES or "torch" not in backends:
        fail(f"engines {sorted(engines)} / backends {sorted(backends)} lack {sorted(ENGINES - engines)} or torch")
    print(f"plugins: {len(plugins)} loaded; engines {sorted(engines)}; backends {sorted(backends)}")

    model, out = workdir / "tiny-spark", workdir / "hello.wav"
    flashtts("tiny-model", "spark", str(model), "--force")
    flashtts(
        "infer",
        "-i",
        "Hello from a wheel.",
        "-o",
        str(out),
        "--model_path",
        str(model),
        "--backend",
        "torch",
        "--name",
        "female",
    )
    import soundfile as sf

    info = sf.info(str(out))
    if info.frames == 0 or info.samplerate != 16000:
        fail(f"{out}: {info.frames} frames at {info.samplerate} Hz")
    print(f"infer: {info.frames / info.samplerate:.2f} s of audio at {info.samplerate} Hz from the tiny Spark model")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
