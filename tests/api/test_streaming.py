"""Streaming that really streams, client disconnects that stop the work, and concurrency."""

from __future__ import annotations

import concurrent.futures
import time

import httpx


def _server_idle(server, within: float) -> float:
    """Seconds until /server_info reports no active generation (fails after ``within``)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if httpx.get(f"{server.url}/server_info").json()["active_generations"] == 0:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"a generation was still active {within} s after the client left")


def test_first_bytes_arrive_long_before_the_stream_ends(spark_server):
    body = {
        "name": "female",
        "text": "A long one, spoken slowly and carefully, word after word, to the very end.",  # bound > 600 tokens
        "response_format": "pcm",
        "stream": True,
        "max_tokens": 600,
        "seed": 5,
    }
    start = time.monotonic()
    first = None
    total = 0
    with httpx.stream("POST", f"{spark_server.url}/speak", json=body, timeout=120) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            if first is None:
                first = time.monotonic() - start
            total += len(chunk)
    end = time.monotonic() - start
    assert total == 600 * 320 * 2  # all 600 tokens were generated …
    assert first < end / 3, (first, end)  # … and the first audio left within the first third of that time


def test_a_client_that_disconnects_mid_stream_stops_its_generation(spark_server):
    text = "Never finished, this one goes on and on and on without an end in sight."
    long = {"name": "male", "text": text, "response_format": "pcm", "stream": True, "max_tokens": 20000}
    with httpx.stream("POST", f"{spark_server.url}/speak", json=long, timeout=120) as r:
        assert r.status_code == 200
        chunks = r.iter_bytes()  # held: a dropped iterator would close the connection at once
        next(chunks)
        assert httpx.get(f"{spark_server.url}/server_info").json()["active_generations"] == 1
    # 20000 tokens would take minutes; leaving must free the server within a moment.
    assert _server_idle(spark_server, within=5.0) < 5.0
    # The backend slot is free again: a short request is served at once, not after the abandoned one.
    start = time.monotonic()
    quick = httpx.post(
        f"{spark_server.url}/speak",
        json={"name": "male", "text": "Next.", "response_format": "pcm", "max_tokens": 30},
        timeout=60,
    )
    assert quick.status_code == 200 and time.monotonic() - start < 5.0


def test_a_client_that_leaves_a_whole_response_early_stops_its_generation(spark_server):
    long = {"name": "female", "text": "Never collected.", "response_format": "wav", "max_tokens": 20000}
    try:
        httpx.post(f"{spark_server.url}/speak", json=long, timeout=1.5)
    except httpx.ReadTimeout:
        pass
    assert _server_idle(spark_server, within=5.0) < 5.0


def test_sixteen_concurrent_requests_all_succeed(spark_server):
    def one(i: int) -> tuple[int, int]:
        route, body = [
            ("/speak", {"name": "female", "text": f"Request {i}.", "response_format": "wav", "max_tokens": 40}),
            (
                "/v1/audio/speech",
                {"model": "x", "input": f"Request {i}.", "voice": "alloy", "response_format": "mp3", "max_tokens": 40},
            ),
            (
                "/speak",
                {
                    "name": "narrator",
                    "text": f"Request {i}.",
                    "response_format": "pcm",
                    "stream": True,
                    "max_tokens": 40,
                },
            ),
            (
                "/multi_speak",
                {"text": f"<role:male> Request {i}. <role:female> Yes.", "response_format": "opus", "max_tokens": 20},
            ),
        ][i % 4]
        r = httpx.post(f"{spark_server.url}{route}", json=body, timeout=300)
        return r.status_code, len(r.content)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    assert all(status == 200 and size > 0 for status, size in results), results
    assert httpx.get(f"{spark_server.url}/server_info").json()["active_generations"] == 0
