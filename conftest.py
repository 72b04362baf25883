"""Fixtures shared by every package's tests: tiny models in the upstream layouts, and a real server.

Tiny checkpoints are written once per test session by the engines' own ``write_tiny_model`` (the
same code ``flashtts tiny-model`` runs). ``serve`` starts ``flashtts serve`` as a subprocess, a real
uvicorn on 127.0.0.1, and waits for /health.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.server_process import Server, free_port, start_server

__all__ = ["Server", "free_port", "start_server"]  # imported from here by the tests


@pytest.fixture(autouse=True)
def _torch_threads_kept():
    """A runtime loaded in the test process makes the loading thread (here: the tests' own) run its
    later torch kernels serially (flashtts_core.openmp.stay_teamless, right for a server's event loop);
    the next test gets the thread count it had."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _tiny_model(tmp_path_factory, engine: str) -> Path:
    from flashtts_core.plugins import get_plugin_manager

    pm = get_plugin_manager()
    if engine not in pm.engines:
        pytest.skip(f"engine {engine!r} is not installed")
    path = tmp_path_factory.mktemp(f"tiny-{engine}")
    pm.engines[engine].write_tiny_model(path)
    return path


@pytest.fixture(scope="session")
def tiny_spark(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory, "spark")


@pytest.fixture(scope="session")
def tiny_orpheus(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory, "orpheus")


@pytest.fixture(scope="session")
def tiny_mega(tmp_path_factory) -> Path:
    """A tiny MegaTTS3 model with its example reference (example.wav + example.npy latent)."""
    return _tiny_model(tmp_path_factory, "mega")


def backend_selected(name: str) -> bool:
    """FLASHTTS_TEST_BACKENDS=vllm (a comma list) limits the per-backend tests to those backends: each
    backend's nox session runs them for its own backend (torch's run in `nox -s tests`)."""
    only = os.environ.get("FLASHTTS_TEST_BACKENDS", "").strip()
    return not only or name.split(":")[0] in {n.strip() for n in only.split(",")}


def installed_backends() -> list[str]:
    """Every registered backend whose library is installed here and that this run selects
    (tests parametrize over these)."""
    from flashtts_core.errors import BackendUnavailable
    from flashtts_core.plugins import get_plugin_manager

    names = []
    for name, cls in sorted(get_plugin_manager().backends.items()):
        if not backend_selected(name):
            continue
        try:
            cls.check_available()
        except BackendUnavailable:
            continue
        names.append(name)
    return names


def with_gguf(model_dir: Path, folder: Path) -> Path:
    """``folder``: the model's files (linked) plus an f32 GGUF of its LLM, which llama-cpp reads."""
    from flashtts_backends.gguf_convert import convert_to_gguf

    folder.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        (folder / item.name).symlink_to(item)
    convert_to_gguf(model_dir, outtype="f32", outfile=folder / "model-f32.gguf")
    return folder


def torch_server_args(model: Path, tmp_path: Path, *flags: str) -> list[str]:
    """``flashtts serve`` arguments for ``model`` on the torch backend with its roles under ``tmp_path``."""
    return ["--model_path", str(model), "--backend", "torch", "--role_dir", str(tmp_path / "roles"), *flags]


def tone_wav(seconds: float = 2.0, rate: int = 16000, freq: float = 220.0) -> bytes:
    """A short voiced-looking clip (tone + a little noise) as WAV bytes."""
    import io

    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    samples = 0.3 * np.sin(2 * np.pi * freq * t) + 0.03 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


async def assert_refused(connection, status: int = 403) -> None:
    """A WebSocket ``connect(...)`` that the server answers with HTTP ``status`` instead of opening."""
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        async with connection:
            pass
    assert refused.value.response.status_code == status


@pytest.fixture
def serve(tmp_path):
    """``serve([...flags])`` starts a server; every one started is stopped after the test."""
    servers: list[Server] = []

    def _serve(args: list[str], env: dict | None = None) -> Server:
        server = start_server(args, tmp_path, env)
        servers.append(server)
        return server

    yield _serve
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> dict[str, str]:
    """moto's S3 server on 127.0.0.1 (a real S3 API, as s3fs's own tests use): the environment that
    points boto3/s3fs, and so ``flashtts serve --role_dir s3://…``, at it. Create buckets with ``s3_bucket``."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(env["AWS_ENDPOINT_URL"], timeout=2)
            break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start:\n{log.read_text(errors='replace')[-2000:]}") from None
            time.sleep(0.2)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # this process's s3fs clients too
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A new, empty bucket on the moto server; its name."""
    import uuid

    import boto3

    name = f"flashtts-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name
