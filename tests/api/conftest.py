"""Fixtures for the API tests: real ``flashtts serve`` processes on 127.0.0.1 with the tiny Spark model.

Servers are module-scoped: each test module starts the few it needs once.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import Server, start_server, tone_wav, torch_server_args


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Decode any container with PyAV: (mono float samples, sample rate)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        parts = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
    return (np.concatenate(parts) if parts else np.zeros(0)), rate


def snapshot(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size: compare two to prove nothing changed on disk."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def reference_wav() -> bytes:
    return tone_wav()


@pytest.fixture(scope="session")
def audio_decoder() -> Callable[[bytes], tuple[np.ndarray, int]]:
    return decode


@pytest.fixture(scope="module")
def spark_server(tiny_spark, tmp_path_factory) -> Server:
    """A server whose role_dir starts with a dropped-in role folder: narrator/voice.wav + reference_text.txt."""
    tmp = tmp_path_factory.mktemp("spark-api")
    role_dir = tmp / "roles"
    (role_dir / "narrator").mkdir(parents=True)
    (role_dir / "narrator" / "voice.wav").write_bytes(tone_wav(freq=180.0))
    (role_dir / "narrator" / "reference_text.txt").write_text("a short reference text", encoding="utf-8")
    server = start_server(torch_server_args(tiny_spark, tmp), tmp)
    server.role_dir = role_dir
    yield server
    server.stop()


@pytest.fixture(scope="session")
def disk_snapshot() -> Callable[[Path], dict[str, int]]:
    return snapshot
