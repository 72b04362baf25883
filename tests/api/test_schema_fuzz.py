"""Property-based fuzzing of every operation in /openapi.json (schemathesis): no input gives a 5xx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import start_server, torch_server_args

pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def fuzz_server(tiny_spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    # Short contexts keep each generated synthesis cheap; the limits themselves are under test too.
    server = start_server(
        torch_server_args(tiny_spark, tmp, "--max_length", "256", "--max_text_length", "200", "--max_upload_mb", "1"),
        tmp,
    )
    yield server
    server.stop()


def test_no_generated_request_gets_a_server_error(fuzz_server, tmp_path):
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    result = subprocess.run(
        [
            exe,
            "run",
            f"{fuzz_server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "15",
            "--workers",
            "2",
            "--seed",
            "7",
            "--request-timeout",
            "60",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    summary = result.stdout[-4000:]
    assert result.returncode == 0, summary + "\n--- server log ---\n" + fuzz_server.output()[-4000:]
    assert "passed" in summary
    assert "unhandled error" not in fuzz_server.output()
