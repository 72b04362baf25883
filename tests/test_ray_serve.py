"""``flashtts serve --replicas 2``: two CPU replicas of the tiny Spark model behind a real Ray Serve proxy.

One real command starts its own Ray cluster on this machine; the test sees both replicas answer
(X-FlashTTS-Replica), a stream arrive through the proxy while it is still being generated, and
SIGTERM stop the command with every process it started. (A single server's header and its never
loading Ray: tests/api/test_native_api.py.)
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import start_server

pytest.importorskip("ray.serve", reason='pip install "flashtts-server[ray]"')

HEADER = "X-FlashTTS-Replica"
# Spark: 320 samples of 16-bit PCM per audio token.
PCM_BYTES_PER_TOKEN = 320 * 2
# Long enough that its speaking-rate bound (flashtts_core.speaking_rate) is above 600 tokens.
LONG = "A long one, spoken slowly and carefully, word after word, to the very end."


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (Ray's GCS, raylet, workers, replicas) with its start time."""
    table = _process_table()
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, started) in table.items():
            if ppid == parent and child not in found:
                found[child] = started
                frontier.append(child)
    return found


def _alive(processes: dict[int, str]) -> list[int]:
    """Those still running (same pid and start time, not a zombie)."""
    table = _process_table()
    alive = []
    for pid, started in processes.items():
        if pid in table and table[pid][1] == started:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
    return alive


def test_two_replicas_serve_stream_and_stop_cleanly(tiny_spark, tmp_path):
    server = start_server(
        ["--model_path", str(tiny_spark), "--backend", "torch", "--replicas", "2", "--ray_num_cpus", "0.5"],
        tmp_path,
        env={"RAY_USAGE_STATS_ENABLED": "0"},
        timeout=240,
    )
    try:
        # /health answers once one replica is up; the command says when all of them are.
        deadline = time.monotonic() + 180
        while "replicas ready behind Ray Serve's proxy" not in server.output():
            assert time.monotonic() < deadline and server.proc.poll() is None, server.output()[-3000:]
            time.sleep(0.5)
        started = _descendants(server.proc.pid)
        assert len(started) >= 4, started  # GCS, raylet, controller, proxy, replicas …
        seen: dict[str, int] = {}
        with server.client(timeout=60) as client:
            # Both replicas speak: real synthesis on each, within a bounded number of requests.
            for i in range(30):
                r = client.post(
                    "/speak", json={"name": "female", "text": f"Hello {i}.", "response_format": "wav", "max_tokens": 10}
                )
                assert r.status_code == 200, r.text
                assert r.content[:4] == b"RIFF"
                seen[r.headers[HEADER]] = seen.get(r.headers[HEADER], 0) + 1
                if len(seen) == 2:
                    break
            assert len(seen) == 2, f"one replica answered all {sum(seen.values())} requests: {seen}"
            for name in seen:
                host, _, rest = name.partition(":")
                pid, _, replica_id = rest.partition("/")
                assert host and pid.isdigit() and replica_id, name
                assert int(pid) in started  # a replica is one of the processes the command started

            # Errors come from the replica too, in the project's JSON shape, with the header; the
            # client's request id comes back once (the proxy's copy, not the replica's as well).
            r = client.post("/speak", json={"name": "nobody", "text": "Hi."}, headers={"X-Request-Id": "trace-42"})
            assert r.status_code == 404 and r.json()["error"]["param"] == "name"
            assert r.headers[HEADER] in seen
            assert r.headers.get_list("X-Request-Id") == ["trace-42"]

            # A stream passes the proxy chunk by chunk: the first audio long before the last.
            body = {"name": "male", "text": LONG, "response_format": "pcm", "stream": True, "max_tokens": 600}
            start = time.monotonic()
            first, total, chunks = None, 0, 0
            with client.stream("POST", "/speak", json=body) as r:
                assert r.status_code == 200 and r.headers[HEADER] in seen
                for chunk in r.iter_bytes():
                    first = time.monotonic() - start if first is None else first
                    total += len(chunk)
                    chunks += 1
            end = time.monotonic() - start
        assert total == 600 * PCM_BYTES_PER_TOKEN
        assert chunks > 2 and first < end / 2, (first, end, chunks)

        # A client that leaves mid-stream: the proxy cancels the request, and the replica's generation stops.
        long = {
            "name": "male",
            "text": LONG,
            "response_format": "pcm",
            "stream": True,
            "max_tokens": 20000,
        }
        with httpx.Client(base_url=server.url, timeout=60) as client:
            with client.stream("POST", "/speak", json=long) as r:
                assert r.status_code == 200
                busy = r.headers[HEADER]
                next(r.iter_bytes())
            # 20000 tokens take minutes; its replica must be idle again within seconds.
            left = time.monotonic()
            idle = False
            while not idle and time.monotonic() - left < 15:
                info = client.get("/server_info")
                idle = info.headers[HEADER] == busy and info.json()["active_generations"] == 0
                time.sleep(0.1)
            assert idle, f"{busy} still generating {time.monotonic() - left:.1f} s after its client left"
    finally:
        # SIGTERM: replicas drained and stopped, the Ray cluster the command started gone, exit 0.
        stopping = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        try:
            code = server.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.stop()
            raise AssertionError(f"no exit 90 s after SIGTERM:\n{server.output()[-3000:]}") from None
    assert code == 0, server.output()[-3000:]
    deadline = time.monotonic() + 20
    while _alive(started) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(started), f"left running after the command exited: {_alive(started)}"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=2)
    assert "stopping: replicas first" in server.output()
    print(f"stopped in {time.monotonic() - stopping:.1f} s")


def test_deployment_options_follow_the_flags(tiny_spark):
    from flashtts_server.ray_serve import ScaleOutError, deployment_options, replica_values
    from flashtts_server.settings import ServerSettings

    plain = deployment_options(ServerSettings(replicas=3, ray_num_cpus=2, ray_num_gpus=1, llm_batch_size=32))
    assert plain["num_replicas"] == 3 and "autoscaling_config" not in plain
    assert plain["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 1}
    assert plain["max_ongoing_requests"] == 32
    assert deployment_options(ServerSettings(replicas=1, max_pending_requests=8))["max_ongoing_requests"] == 8
    assert plain["graceful_shutdown_timeout_s"] == ServerSettings().shutdown_timeout
    scaled = deployment_options(ServerSettings(replicas=2, min_replicas=1, max_replicas=4))
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 2}
    # Bounds alone: start at the lower one; scale to zero is Ray's to do.
    assert deployment_options(ServerSettings(min_replicas=0, max_replicas=3))["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 3,
        "initial_replicas": 0,
    }
    # Bounds that cannot hold are refused before Ray starts (the CLI prints them, exit status 2).
    with pytest.raises(ScaleOutError, match="--min_replicas 1 <= --replicas 3 <= --max_replicas 2 does not hold"):
        deployment_options(ServerSettings(replicas=3, min_replicas=1, max_replicas=2))
    with pytest.raises(ScaleOutError, match="--min_replicas 4 is more than --max_replicas 2"):
        deployment_options(ServerSettings(min_replicas=4, max_replicas=2))
    values = replica_values(ServerSettings(model_path=tiny_spark, replicas=2, role_dir="roles"), cwd=Path("/srv/tts"))
    assert values["role_dir"] == "/srv/tts/roles" and values["model_path"] == str(tiny_spark)
    assert "replicas" not in values and ServerSettings(**values).replicas is None


def test_replicas_the_cluster_cannot_hold_are_refused_on_a_cluster_the_command_started():
    # (Through the real command this exits 2 after Ray started and stops it again: ~50 s here, so not
    # run in the suite; the cleanup path is the one the stop test above takes.)
    from flashtts_server.ray_serve import ScaleOutError, _check_resources, deployment_options
    from flashtts_server.settings import ServerSettings

    settings = ServerSettings(replicas=2, ray_num_cpus=0.5, ray_num_gpus=1)
    options = deployment_options(settings)
    _check_resources({"CPU": 1.0, "GPU": 2.0}, settings, options, joined=False)
    with pytest.raises(ScaleOutError, match="2 replicas with --ray_num_gpus 1 need 2 GPUs; the Ray cluster has 1"):
        _check_resources({"CPU": 16.0, "GPU": 1.0}, settings, options, joined=False)
    with pytest.raises(ScaleOutError, match="--ray_num_cpus 0.5 need 1 CPUs; the Ray cluster has 0.5"):
        _check_resources(
            {"CPU": 0.5}, settings, deployment_options(ServerSettings(replicas=2, ray_num_cpus=0.5)), False
        )
    _check_resources({"CPU": 16.0}, settings, options, joined=True)  # a joined cluster may grow: a warning only
