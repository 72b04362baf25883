"""Operating the server, through real ``flashtts serve`` processes on the tiny Spark model:
/ready and /health while loading, Prometheus /metrics, admission control (--max_pending_requests),
graceful shutdown on real SIGTERM/SIGINT, X-Request-Id and JSON logs, and bodies over the limit.

One server serves the whole module; the last test stops it with a real SIGTERM.
"""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request

import httpx
import pytest
from flashtts_server import __version__
from prometheus_client.parser import text_string_to_metric_families

from tests.server_process import Server, spawn_server

KEY = "ops-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SAMPLES_PER_TOKEN = 320  # tiny Spark: one semantic token is 20 ms at 16 kHz
SHUTDOWN_TIMEOUT = 10
FAMILIES = {
    "flashtts_requests": "counter",
    "flashtts_request_duration_seconds": "histogram",
    "flashtts_time_to_first_audio_seconds": "histogram",
    "flashtts_real_time_factor": "histogram",
    "flashtts_audio_seconds": "counter",
    "flashtts_generated_tokens": "counter",
    "flashtts_reference_cache_hits": "counter",
    "flashtts_reference_cache_misses": "counter",
    "flashtts_active_requests": "gauge",
    "flashtts_pending_requests": "gauge",
    "flashtts_rejected_requests": "counter",
    "flashtts_info": "gauge",  # an info metric, as the text format writes one
}


def _wait_ready(server: Server, timeout: float = 240) -> list[tuple[int, str, int, str]]:
    """Poll /health and /ready until ready; every answer seen: (health code, status, ready code, status)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.output()[-4000:]}")
        try:
            health = httpx.get(f"{server.url}/health", timeout=5)
            ready = httpx.get(f"{server.url}/ready", timeout=5)
        except httpx.HTTPError:
            time.sleep(0.05)
            continue
        seen.append((health.status_code, health.json()["status"], ready.status_code, ready.json()["status"]))
        if ready.status_code == 200:
            return seen
        time.sleep(0.05)
    raise RuntimeError(f"server not ready in {timeout} s:\n{server.output()[-4000:]}")


@pytest.fixture(scope="module")
def servers(tiny_spark, tmp_path_factory):
    """One server for the whole module (the last test stops it with SIGTERM)."""
    tmp = tmp_path_factory.mktemp("ops")
    flags = ["--api_key", KEY, "--metrics_require_api_key", "--log_format", "json", "--max_pending_requests", "2"]
    flags += ["--shutdown_timeout", str(SHUTDOWN_TIMEOUT), "--role_dir", str(tmp / "roles")]
    # The speaking-rate bound off (the flag's 0): max_tokens alone sets how long the held streams run.
    flags += ["--speaking_rate_bound", "0"]
    server = spawn_server(["--model_path", str(tiny_spark), "--backend", "torch", *flags], tmp, log=tmp / "ops.log")
    try:
        server.startup = _wait_ready(server)
        yield {"ops": server}
    finally:
        server.stop()


def metrics(server: Server) -> dict[str, dict]:
    """name -> {"type": ..., "samples": {(sample name, sorted labels): value}}"""
    text = httpx.get(f"{server.url}/metrics", headers=AUTH, timeout=30).text
    out = {}
    for family in text_string_to_metric_families(text):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        out[family.name] = {"type": family.type, "samples": samples}
    return out


def value(snapshot: dict, family: str, sample: str, **labels) -> float:
    return snapshot[family]["samples"].get((sample, tuple(sorted(labels.items()))), 0.0)


def speech(max_tokens: int, fmt: str = "pcm", **extra) -> dict:
    return {
        "model": "x",
        "input": "Operating.",
        "voice": "female",
        "response_format": fmt,
        "max_tokens": max_tokens,
        "sample_rate": 16000,  # the engine's own rate (OpenAI's default is 24 kHz): sizes count tokens
        **extra,
    }


# -- probes ----------------------------------------------------------------------------------------
def test_the_port_opens_while_the_model_loads(servers):
    seen = servers["ops"].startup
    # The first answers came while loading: alive (/health 200) but not ready (/ready 503).
    assert seen[0] == (200, "loading", 503, "loading"), seen[:3]
    assert seen[-1][2:] == (200, "ready")
    assert "ready to serve" in servers["ops"].output()


# -- metrics ---------------------------------------------------------------------------------------
def test_metrics_need_the_key_when_the_flag_says_so(servers):
    ops = servers["ops"]
    assert httpx.get(f"{ops.url}/metrics").status_code == 401
    r = httpx.get(f"{ops.url}/metrics", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")


def test_metrics_count_requests_audio_and_tokens(servers, tiny_spark):
    ops = servers["ops"]
    before = metrics(ops)
    with ops.client(headers=AUTH) as client:
        streamed = [client.post("/v1/audio/speech", json=speech(40)) for _ in range(2)]
        whole = client.post(
            "/speak", json={"name": "male", "text": "Whole.", "response_format": "wav", "max_tokens": 30}
        )
        assert client.get("/v1/models/no-such-model").status_code == 404
        assert client.get("/no/such/path/123").status_code == 404
    assert [r.status_code for r in streamed] == [200, 200] and whole.status_code == 200
    after = metrics(ops)

    for name, kind in FAMILIES.items():
        assert after[name]["type"] == kind, name

    def delta(family, sample, **labels):
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)

    speech_route = {"route": "/v1/audio/speech"}
    assert delta("flashtts_requests", "flashtts_requests_total", status="200", **speech_route) == 2
    assert delta("flashtts_requests", "flashtts_requests_total", route="/speak", status="200") == 1
    # Route templates, not paths: a path no route knows is "other".
    assert delta("flashtts_requests", "flashtts_requests_total", route="/v1/models/{model_id}", status="404") == 1
    assert delta("flashtts_requests", "flashtts_requests_total", route="other", status="404") == 1
    assert not any(
        "no/such" in str(key) or "no-such-model" in str(key) for key in after["flashtts_requests"]["samples"]
    )

    assert delta("flashtts_audio_seconds", "flashtts_audio_seconds_total", **speech_route) == pytest.approx(2 * 40 / 50)
    assert delta("flashtts_audio_seconds", "flashtts_audio_seconds_total", route="/speak") == pytest.approx(30 / 50)
    for family in ("flashtts_time_to_first_audio_seconds", "flashtts_real_time_factor"):
        assert delta(family, f"{family}_count", **speech_route) == 2
        assert delta(family, f"{family}_sum", **speech_route) > 0
    assert delta("flashtts_request_duration_seconds", "flashtts_request_duration_seconds_count", **speech_route) == 2
    # 40 + 40 + 30 semantic tokens at least (a built-in voice adds its global tokens).
    assert delta("flashtts_generated_tokens", "flashtts_generated_tokens_total") >= 110
    assert value(after, "flashtts_active_requests", "flashtts_active_requests") == 0
    assert value(after, "flashtts_pending_requests", "flashtts_pending_requests") == 0
    info = next(dict(labels) for (name, labels) in after["flashtts_info"]["samples"] if name == "flashtts_info")
    assert info == {"engine": "spark", "backend": "torch", "model": tiny_spark.name, "version": __version__}


def test_a_repeated_reference_upload_is_prepared_once_and_sounds_the_same(servers):
    """The same clip sent again reuses its prepared tokens (a hit); other bytes, another transcript
    or a refused clip are misses, and a refused one is not kept."""
    import io

    import numpy as np
    import soundfile as sf

    ops = servers["ops"]

    def wav(freq: float, seconds: float = 1.5) -> bytes:
        t = np.arange(int(seconds * 16000)) / 16000
        buf = io.BytesIO()
        sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV")
        return buf.getvalue()

    def clone(client, clip: bytes, text: str = "a reference"):
        return client.post(
            "/clone_voice",
            data={"text": "Cached.", "reference_text": text, "response_format": "pcm", "max_tokens": "20", "seed": "7"},
            files={"reference_audio_file": ("ref.wav", clip, "audio/wav")},
        )

    def counts():
        snap = metrics(ops)
        return [
            value(snap, f"flashtts_reference_cache_{o}", f"flashtts_reference_cache_{o}_total")
            for o in ("hits", "misses")
        ]

    clip = wav(233.0)
    start = counts()
    with ops.client(headers=AUTH) as client:
        first, again = clone(client, clip), clone(client, clip)
        assert first.status_code == again.status_code == 200, first.text
        assert first.content == again.content  # same seed, same prepared tokens
        assert [b - a for a, b in zip(start, counts())] == [1, 1]
        assert clone(client, wav(311.0)).status_code == 200  # other bytes
        assert clone(client, clip, text="another transcript").status_code == 200
        assert [b - a for a, b in zip(start, counts())] == [1, 3]
        for _ in range(2):  # too short: refused each time, never kept
            short = clone(client, wav(233.0, seconds=0.05))
            assert short.status_code == 400, short.text
        assert [b - a for a, b in zip(start, counts())] == [1, 5]
        # Saving the cached upload as a role names that role only; the next clone is still a hit.
        saved = client.post(
            "/add_speaker",
            data={"name": "cached-upload", "reference_text": "a reference"},
            files={"audio_file": ("ref.wav", clip, "audio/wav")},
        )
        assert saved.status_code == 200, saved.text
        assert clone(client, clip).content == first.content
        assert [b - a for a, b in zip(start, counts())] == [3, 5]
        assert client.post("/delete_speaker", data={"name": "cached-upload"}).status_code == 200


# -- admission control -----------------------------------------------------------------------------
def test_past_max_pending_requests_a_synthesis_gets_503_at_once(servers):
    ops = servers["ops"]
    before = metrics(ops)
    clients = [ops.client(headers=AUTH) for _ in range(2)]
    streams = [c.stream("POST", "/v1/audio/speech", json=speech(5000)) for c in clients]
    try:
        responses = [s.__enter__() for s in streams]
        assert [r.status_code for r in responses] == [200, 200]
        busy = metrics(ops)
        assert value(busy, "flashtts_pending_requests", "flashtts_pending_requests") == 2
        start = time.monotonic()
        refused = httpx.post(f"{ops.url}/v1/audio/speech", json=speech(10), headers=AUTH, timeout=30)
        assert time.monotonic() - start < 5  # at once, not after the two streams
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "server_overloaded"
        assert refused.json()["error"]["type"] == "service_unavailable"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-request-id"]
        # Every synthesis route under every prefix is guarded (the route table, not the framework's router).
        for path in ("/speak", "/v1/speak", "/v1/multi_speak"):
            body = {"name": "female", "text": "<role:female> Hi.", "max_tokens": 10}
            assert httpx.post(f"{ops.url}{path}", json=body, headers=AUTH, timeout=30).status_code == 503, path
        # Without the key: a 401 first, never a 503 that tells an outsider the server's load.
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            anonymous = httpx.post(f"{ops.url}/v1/audio/speech", json=speech(10), headers=headers, timeout=30)
            assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "authentication_error"
            assert anonymous.headers["www-authenticate"] == "Bearer" and "retry-after" not in anonymous.headers
        # Routes that do not synthesize are not counted against the limit.
        info = httpx.get(f"{ops.url}/server_info", headers=AUTH)
        assert info.status_code == 200 and info.json()["limits"]["max_pending_requests"] == 2
    finally:
        for s in streams:
            s.__exit__(None, None, None)
        for c in clients:
            c.close()
    after = metrics(ops)
    # Refused before routing, still counted under its route's template.
    refused_503 = {"route": "/v1/audio/speech", "status": "503"}
    assert value(after, "flashtts_requests", "flashtts_requests_total", **refused_503) == (
        value(before, "flashtts_requests", "flashtts_requests_total", **refused_503) + 1
    )
    # Under its full template, include prefix and all: /v1/speak is not /speak.
    for route in ("/speak", "/v1/speak", "/v1/multi_speak"):
        labels = {"route": route, "status": "503"}
        assert value(after, "flashtts_requests", "flashtts_requests_total", **labels) == (
            value(before, "flashtts_requests", "flashtts_requests_total", **labels) + 1
        ), route
    assert value(after, "flashtts_rejected_requests", "flashtts_rejected_requests_total", reason="overloaded") == (
        value(before, "flashtts_rejected_requests", "flashtts_rejected_requests_total", reason="overloaded") + 4
    )
    deadline = time.monotonic() + 30  # the abandoned streams leave the count once their generation stops
    while value(metrics(ops), "flashtts_pending_requests", "flashtts_pending_requests") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert value(metrics(ops), "flashtts_pending_requests", "flashtts_pending_requests") == 0
    assert httpx.post(f"{ops.url}/v1/audio/speech", json=speech(10), headers=AUTH, timeout=60).status_code == 200


# -- request ids and logs --------------------------------------------------------------------------
def test_every_response_carries_a_request_id(servers):
    ops = servers["ops"]
    with ops.client() as client:
        echoed = client.get("/health", headers={"X-Request-Id": "trace-7f3a:span=2"})
        unauthorised = client.get("/server_info", headers={"X-Request-Id": "abc-401"})
        missing = client.get("/nothing-here")
        too_long = client.get("/health", headers={"X-Request-Id": "a" * 129})
        spaced = client.get("/health", headers={"X-Request-Id": "two words"})
        with client.stream(
            "POST", "/v1/audio/speech", json=speech(20), headers={**AUTH, "X-Request-Id": "stream-1"}
        ) as streamed:
            streamed.read()
    assert echoed.headers["x-request-id"] == "trace-7f3a:span=2"
    assert unauthorised.status_code == 401 and unauthorised.headers["x-request-id"] == "abc-401"
    assert streamed.status_code == 200 and streamed.headers["x-request-id"] == "stream-1"
    generated = [missing.headers["x-request-id"], too_long.headers["x-request-id"], spaced.headers["x-request-id"]]
    assert all(len(g) == 32 and int(g, 16) >= 0 for g in generated) and len(set(generated)) == 3


def test_json_log_lines_name_their_request(servers):
    ops = servers["ops"]
    httpx.post(f"{ops.url}/speak", json={"name": "nobody", "text": "x"}, headers={**AUTH, "X-Request-Id": "find-me-42"})
    time.sleep(0.3)
    lines = [line for line in ops.output().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    mine = [e for e in entries if e.get("request_id") == "find-me-42"]
    assert any(e["logger"] == "uvicorn.access" and e["status"] == 404 and e["path"] == "/speak" for e in mine), mine
    assert {"time", "level", "logger", "message"} <= set(entries[0])


# -- bodies over the limit -------------------------------------------------------------------------
def test_an_upload_over_the_limit_gets_the_413_not_a_reset(servers):
    # urllib sends the whole body before it reads a byte: a server that closes early resets it.
    ops = servers["ops"]
    body = b"\0" * (60 * 2**20)  # against the default --max_upload_mb 20
    request = urllib.request.Request(
        f"{ops.url}/add_speaker",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=xyz", **AUTH},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=120)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"]["code"] == "payload_too_large"


def test_a_chunked_upload_over_the_limit_is_read_away_and_the_connection_lives_on(servers):
    ops = servers["ops"]
    before = metrics(ops)
    with socket.create_connection(("127.0.0.1", ops.port), timeout=60) as sock:
        sock.sendall(
            b"POST /add_speaker HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n"
        )
        start = b'--xyz\r\nContent-Disposition: form-data; name="audio_file"; filename="a.wav"\r\n\r\n'
        sock.sendall(b"%x\r\n%s\r\n" % (len(start), start))
        piece = b"\0" * 2**20
        for _ in range(40):  # 40 MiB, past the 20 MiB limit (plus base64 room)
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.sendall(b"0\r\n\r\n")
        answer = _read_response(sock)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"payload_too_large" in answer and b"x-request-id" in answer.lower()
        # The same connection serves the next request.
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
    after = metrics(ops)
    for family, sample, labels in (
        ("flashtts_rejected_requests", "flashtts_rejected_requests_total", {"reason": "body_too_large"}),
        ("flashtts_requests", "flashtts_requests_total", {"route": "/add_speaker", "status": "413"}),
    ):
        assert value(after, family, sample, **labels) == value(before, family, sample, **labels) + 1


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest


def test_openai_input_over_the_limit_is_a_400_as_openai_answers_it(servers):
    ops = servers["ops"]
    with ops.client(headers=AUTH) as client:
        openai_route = client.post("/v1/audio/speech", json=speech(10, input="a" * 4097))
        native = client.post("/speak", json={"name": "male", "text": "a" * 4097})
    error = openai_route.json()["error"]
    assert openai_route.status_code == 400 and error["code"] == "string_above_max_length"
    assert error["param"] == "input" and "maximum length 4096" in error["message"] and "4097" in error["message"]
    assert native.status_code == 413 and native.json()["error"]["param"] == "text"


# -- graceful shutdown -----------------------------------------------------------------------------
def test_sigterm_finishes_running_streams_within_the_timeout_then_closes_the_engine(servers, audio_decoder):
    # Last in this module: it stops the server the tests above used.
    server = servers["ops"]
    short, long = 200, 20000  # one ends within --shutdown_timeout, the other would take minutes
    a, b = (httpx.Client(base_url=server.url, headers=AUTH, timeout=120) for _ in range(2))
    with (
        a,
        b,
        a.stream("POST", "/v1/audio/speech", json=speech(short, "wav")) as whole,
        b.stream("POST", "/v1/audio/speech", json=speech(long)) as endless,
    ):
        whole_chunks, endless_chunks = whole.iter_bytes(), endless.iter_bytes()
        data, cut = next(whole_chunks), next(endless_chunks)
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)
        ready = httpx.get(f"{server.url}/ready")
        health = httpx.get(f"{server.url}/health")
        refused = a.post("/speak", json={"name": "male", "text": "Late.", "max_tokens": 5})
        scraped = a.get("/metrics").text
        for chunk in whole_chunks:
            data += chunk
        with pytest.raises(httpx.HTTPError):  # cut off at the timeout: the chunked body never ends
            for chunk in endless_chunks:
                cut += chunk
    assert ready.status_code == 503 and ready.json()["status"] == "shutting_down"
    assert health.status_code == 200  # still alive: liveness is not readiness
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
    assert refused.headers["retry-after"]
    assert 'flashtts_rejected_requests_total{reason="shutting_down"} 1.0' in scraped
    # The stream that could finish ended whole: the header plus every sample, decoding to its full length.
    assert len(data) == 44 + short * SAMPLES_PER_TOKEN * 2
    samples, rate = audio_decoder(data)
    assert rate == 16000 and samples.size == short * SAMPLES_PER_TOKEN
    assert len(cut) < long * SAMPLES_PER_TOKEN * 2
    assert server.proc.wait(timeout=60) == 0
    # Drained for the timeout, not for the minutes the long stream wanted.
    assert SHUTDOWN_TIMEOUT <= time.monotonic() - signalled < SHUTDOWN_TIMEOUT + 20
    messages = [json.loads(line)["message"] for line in server.output().splitlines() if line.strip()]
    for expected in ("SIGTERM: shutting down", "still running after --shutdown_timeout", "cut off by the shutdown"):
        assert any(expected in m for m in messages), expected
    assert "engine and backend closed" in messages
