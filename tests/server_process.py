"""A real ``flashtts serve`` subprocess on 127.0.0.1, for the tests (root ``conftest.py``) and the
benchmarks (``bench/``): start it, wait until it is healthy, read its log, stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running ``flashtts serve`` process."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path, started: float | None = None):
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"
        self.started = time.perf_counter() if started is None else started

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 120), **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_healthy(self, timeout: float, tail: int = 4000) -> float:
        """Poll /health until it says ok; the seconds since the process started. RuntimeError, with
        the last ``tail`` characters of its log, when it exits or is not healthy in ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()[-tail:]}")
            try:
                r = httpx.get(f"{self.url}/health", timeout=2)
                if r.status_code == 200 and r.json().get("status") == "ok":
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not become healthy in {timeout:.0f} s:\n{self.output()[-tail:]}")

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn_server(args: list[str], cwd: Path, log: Path | None = None, env: dict | None = None) -> Server:
    """Start ``flashtts serve ARGS`` on a free port of 127.0.0.1 without waiting for it; its output
    goes to ``log`` (default: ``cwd/server-PORT.log``), ``env`` is added to this process's."""
    port = free_port()
    log = log or cwd / f"server-{port}.log"
    cmd = [sys.executable, "-m", "flashtts_server.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    started = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env, cwd=cwd)
    return Server(proc, port, log, started)


def start_server(args: list[str], tmp_path: Path, env: dict | None = None, timeout: float = 180) -> Server:
    """``spawn_server`` and wait until it is healthy (stopped again if it does not become so)."""
    server = spawn_server(args, tmp_path, env=env)
    try:
        server.wait_healthy(timeout)
    except RuntimeError:
        server.stop()
        raise
    return server
