"""Soak: thousands of mixed requests at concurrency 16 against a real server on the tiny Spark model.

Speak (built-in voices and a saved role), OpenAI speech (whole and streamed), clone from an upload,
dialogue, streams abandoned after their first chunk, roles added and deleted, and bad inputs. The
test fails on any 5xx, a wrong status for a good or bad request, a request that hangs, the server's
RSS growing more than 10% after warm-up, or its open file descriptors growing.

``nox -s tests`` runs 1,000 requests; ``nox -s soak`` 10,000 (``FLASHTTS_SOAK_REQUESTS``). The mix
leans on short texts and cheap requests so 1,000 fit in a few minutes on two cores, but every kind
is in it. Figures are printed and, with ``FLASHTTS_SOAK_REPORT=FILE``, written there as JSON.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from flashtts_server.memory_report import ENV as MEMORY_REPORT_ENV
from flashtts_server.memory_report import diff as memory_diff
from flashtts_server.memory_report import proc_status

from conftest import start_server

REQUESTS = int(os.environ.get("FLASHTTS_SOAK_REQUESTS", "1000"))
CONCURRENCY = 16
# Warm-up is the first 30% of the run: the torch/oneDNN buffers and caches of the batch shapes met,
# glibc's arenas per worker thread. After it, the Python heap (tracemalloc) grows by 0.3 MiB and
# glibc's live allocations by about 12 MiB over 2,100 requests, but the free memory glibc keeps in
# its arenas (chunks freed between live ones: tensors of ever-changing sizes) grew by 81 MiB, which
# was +12-15% of RSS. The server now gives it back with malloc_trim(0) when synthesis goes idle
# (flashtts_server/memory_trim.py), so the RSS measured once the server is idle follows what is live:
# the 10% bound is for live growth, about 2% here (README "Memory over time" has the figures;
# FLASHTTS_MEMORY_REPORT=DIR makes this test write where the growth went, memory_report.py).
WARMUP = max(300, REQUESTS * 3 // 10)
REQUEST_TIMEOUT = 60.0  # a request slower than this is a hang
# The 10% bound holds from 3,000 requests on (nox -s soak: 10,000). The 1,000-request run of
# `nox -s tests` warms up on 300 requests only, before glibc's per-thread arenas have met the whole
# batch mix: its RSS after warm-up rose +6.6% on a quiet machine and +11.2% with both cores busy with
# another process (malloc's live bytes +20 MiB in both; the rest arena pages the mix of the moment
# keeps partly used), so it is held to 20%: about 115 MiB, a leak of ~170 KiB per request after warm-up.
RSS_GROWTH = 0.10 if REQUESTS >= 3000 else 0.20

TEXTS = ["Hi.", "Hello there.", "Yes.", "One, two.", "Good morning!", "你好。", "Okay then, see you soon."]
FORMATS = ["wav", "mp3", "pcm", "opus", "flac", "aac"]
FIXED_ROLE = "soak-fixed"


def tone_wav(seconds: float = 1.0, freq: float = 200.0) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    rng = np.random.default_rng(int(freq))
    samples = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, samples.astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def process_stats(pid: int) -> tuple[int, int]:
    """(RSS in bytes, open file descriptors) of a process, from /proc."""
    return proc_status(pid)["VmRSS"] * 1024, len(os.listdir(f"/proc/{pid}/fd"))


def memory_report(pid: int, folder: Path, n: int, timeout: float = 120.0) -> dict:
    """With FLASHTTS_MEMORY_REPORT set, the server's report number ``n`` (flashtts_server.memory_report)."""
    os.kill(pid, signal.SIGUSR2)
    path = folder / f"memory-{n}.json"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path} in {timeout:.0f} s"
        time.sleep(0.5)
    return json.loads(path.read_text())


class Soak:
    """Runs the mix; every request records (kind, status, seconds); failures are collected, not raised."""

    def __init__(self, url: str, seed: int = 0):
        self.url = url
        self.rng = random.Random(seed)
        self.results: list[tuple[str, int, float]] = []
        self.failures: list[str] = []
        self.roles: list[str] = []  # added and not yet deleted
        self.next_role = 0
        self.reference = tone_wav()

    # -- the kinds, each returning the status it got (and checking it) ------------------------------
    def _speak_body(self, **extra) -> dict:
        return {
            "name": self.rng.choice(["female", "male"]),
            "text": self.rng.choice(TEXTS),
            "response_format": self.rng.choice(FORMATS),
            "max_tokens": self.rng.randint(5, 20),
            "seed": self.rng.randint(0, 1000),
            **extra,
        }

    async def speak(self, c: httpx.AsyncClient) -> None:
        r = await c.post("/speak", json=self._speak_body())
        self._expect(r, 200, "speak", audio=True)

    async def speak_role(self, c: httpx.AsyncClient) -> None:
        r = await c.post("/speak", json=self._speak_body(name=FIXED_ROLE))
        self._expect(r, 200, "speak_role", audio=True)

    async def openai(self, c: httpx.AsyncClient) -> None:
        body = {
            "model": "spark",
            "input": self.rng.choice(TEXTS),
            "voice": self.rng.choice(["alloy", "female"]),
            "response_format": self.rng.choice(FORMATS),
            "stream": False,
            "max_tokens": self.rng.randint(5, 20),
        }
        r = await c.post("/v1/audio/speech", json=body)
        self._expect(r, 200, "openai", audio=True)

    async def stream_whole(self, c: httpx.AsyncClient) -> None:
        body = {
            "model": "spark",
            "input": self.rng.choice(TEXTS),
            "voice": "male",
            "response_format": "pcm",
            "stream": True,
            "max_tokens": self.rng.randint(20, 80),
        }
        async with c.stream("POST", "/v1/audio/speech", json=body) as r:
            data = b"".join([chunk async for chunk in r.aiter_bytes()])
            self._expect(r, 200, "stream_whole")
            if r.status_code == 200 and not data:
                self.failures.append("stream_whole: 200 with no audio")

    async def stream_abandoned(self, c: httpx.AsyncClient) -> None:
        # Still generating when the client walks away after its first chunk (70 tokens): 400 tokens
        # is 8 s of audio, and bounds the KV cache a slow cancellation could grow.
        body = self._speak_body(response_format="pcm", stream=True, max_tokens=400)
        async with c.stream("POST", "/speak", json=body) as r:
            self._expect(r, 200, "stream_abandoned")
            async for _ in r.aiter_bytes():
                break  # leaving the block closes the connection mid-stream

    async def clone(self, c: httpx.AsyncClient) -> None:
        files = {"reference_audio_file": ("ref.wav", self.reference, "audio/wav")}
        data = {
            "text": self.rng.choice(TEXTS),
            "reference_text": "a tone",
            "max_tokens": "10",
            "response_format": "wav",
        }
        r = await c.post("/clone_voice", data=data, files=files)
        self._expect(r, 200, "clone", audio=True)

    async def dialogue(self, c: httpx.AsyncClient) -> None:
        body = {"text": f"<role:female> Hi. <role:{FIXED_ROLE}> Yes.", "response_format": "wav", "max_tokens": 8}
        r = await c.post("/multi_speak", json=body)
        self._expect(r, 200, "dialogue", audio=True)

    async def add_role(self, c: httpx.AsyncClient) -> None:
        name = f"soak-{self.next_role}"
        self.next_role += 1
        files = {"audio_file": ("ref.wav", self.reference, "audio/wav")}
        r = await c.post("/add_speaker", data={"name": name, "reference_text": "a tone"}, files=files)
        if self._expect(r, 200, "add_role"):
            self.roles.append(name)

    async def delete_role(self, c: httpx.AsyncClient) -> None:
        if self.roles:
            name = self.roles.pop(self.rng.randrange(len(self.roles)))
            self._expect(await c.post("/delete_speaker", data={"name": name}), 200, "delete_role")
        else:
            self._expect(await c.post("/delete_speaker", data={"name": "soak-nobody"}), 404, "delete_role")

    async def read(self, c: httpx.AsyncClient) -> None:
        path = self.rng.choice(["/audio_roles", "/server_info", "/health", "/v1/audio/voices", "/v1/models"])
        self._expect(await c.get(path), 200, f"read {path}")

    async def bad(self, c: httpx.AsyncClient) -> None:
        choice = self.rng.randrange(10)
        if choice == 0:
            r = await c.post("/speak", json={"name": "female", "text": "   "})
        elif choice == 1:
            r = await c.post("/speak", json={"name": "nobody-here", "text": "Hi."})
        elif choice == 2:
            r = await c.post("/speak", json={"name": "female", "text": "Hi.", "response_format": "mp4"})
        elif choice == 3:
            r = await c.post(
                "/speak", content=b'{"name": "female", "text": ', headers={"content-type": "application/json"}
            )
        elif choice == 4:
            r = await c.post("/v1/audio/speech", json={"model": "spark", "voice": "alloy"})
        elif choice == 5:
            r = await c.post("/clone_voice", data={"text": "Hi."})
        elif choice == 6:
            files = {"audio_file": ("x.wav", b"not audio at all", "audio/wav")}
            r = await c.post("/add_speaker", data={"name": "soak-bad"}, files=files)
        elif choice == 7:
            r = await c.post("/speak", json={"name": "female", "text": "Hi.", "max_tokens": -1})
        elif choice == 8:
            r = await c.post(
                "/add_speaker", data={"name": "../escape"}, files={"audio_file": ("r.wav", self.reference)}
            )
        else:
            r = await c.post("/multi_speak", json={"text": "<role:female Hi."})
        self._expect(r, range(400, 500), f"bad #{choice}", error_shape=True)

    KINDS = {  # kind: weight (cheap and short ones dominate)
        "speak": 22,
        "speak_role": 6,
        "openai": 8,
        "stream_whole": 4,
        "stream_abandoned": 5,
        "clone": 3,
        "dialogue": 3,
        "add_role": 4,
        "delete_role": 4,
        "read": 16,
        "bad": 25,
    }

    # -- bookkeeping --------------------------------------------------------------------------------
    def _expect(self, r: httpx.Response, expected, kind: str, audio: bool = False, error_shape: bool = False) -> bool:
        ok_status = r.status_code in expected if isinstance(expected, range) else r.status_code == expected
        if r.status_code >= 500 or not ok_status:
            try:
                body = r.text[:300]
            except httpx.ResponseNotRead:  # a stream: its status is what counts
                body = ""
            self.failures.append(f"{kind}: {r.status_code} (expected {expected}) {body}")
            return False
        if audio and not r.content:
            self.failures.append(f"{kind}: 200 with no audio")
        if error_shape:
            error = r.json().get("error") if r.headers.get("content-type", "").startswith("application/json") else None
            if not isinstance(error, dict) or not {"message", "type", "param", "code"} <= set(error):
                self.failures.append(f"{kind}: {r.status_code} without the error shape: {r.text[:200]}")
        return True

    def plan(self, n: int) -> list[str]:
        kinds = list(self.KINDS)
        plan = kinds + self.rng.choices(kinds, weights=list(self.KINDS.values()), k=max(0, n - len(kinds)))
        self.rng.shuffle(plan)
        return plan[:n]

    async def run(self, kinds: list[str]) -> float:
        """Run ``kinds`` at CONCURRENCY; returns the wall time."""
        queue: asyncio.Queue = asyncio.Queue()
        for kind in kinds:
            queue.put_nowait(kind)
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

        async def worker(client: httpx.AsyncClient) -> None:
            while not queue.empty():
                kind = queue.get_nowait()
                start = time.perf_counter()
                status = 0
                try:
                    await asyncio.wait_for(getattr(self, kind)(client), REQUEST_TIMEOUT)
                    status = 1
                except (asyncio.TimeoutError, httpx.TimeoutException):
                    self.failures.append(f"{kind}: no answer within {REQUEST_TIMEOUT:.0f} s (hang)")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{kind}: {type(exc).__name__}: {exc}")
                self.results.append((kind, status, time.perf_counter() - start))

        start = time.perf_counter()
        async with httpx.AsyncClient(base_url=self.url, timeout=REQUEST_TIMEOUT, limits=limits) as client:
            await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
        return time.perf_counter() - start


def settled_stats(pid: int, baseline_fds: int | None = None, wait: float = 10.0, idle: float = 3.0) -> tuple[int, int]:
    """Stats once the server has closed the sockets of a finished run (fds stop falling) and has been
    idle ``idle`` seconds: it gives freed memory back within a second or two of going idle
    (flashtts_server.memory_trim)."""
    start = time.monotonic()
    rss, fds = process_stats(pid)
    while time.monotonic() < start + wait:
        time.sleep(0.5)
        rss, now = process_stats(pid)
        if now == fds and (baseline_fds is None or now <= baseline_fds) and time.monotonic() >= start + idle:
            break
        fds = now
    return rss, fds


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


@pytest.fixture(scope="module")
def server(tiny_spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("soak")
    args = ["--model_path", str(tiny_spark), "--backend", "torch", "--role_dir", str(tmp / "roles")]
    srv = start_server(args, tmp)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and httpx.get(f"{srv.url}/ready", timeout=5).status_code == 503:
        time.sleep(0.2)  # /ready (where the server has it) says the model is loaded
    files = {"audio_file": ("ref.wav", tone_wav(freq=180.0), "audio/wav")}
    r = httpx.post(
        f"{srv.url}/add_speaker", data={"name": FIXED_ROLE, "reference_text": "a tone"}, files=files, timeout=60
    )
    assert r.status_code == 200, r.text
    yield srv
    srv.stop()


def test_soak_mixed_requests(server):
    soak = Soak(server.url)
    plan = soak.plan(REQUESTS)
    pid = server.proc.pid
    start_rss, start_fds = process_stats(pid)

    start_split = proc_status(pid)
    report_dir = Path(os.environ[MEMORY_REPORT_ENV]) if os.environ.get(MEMORY_REPORT_ENV) else None

    asyncio.run(soak.run(plan[:WARMUP]))
    warm_rss, warm_fds = settled_stats(pid)
    warm_split = proc_status(pid)
    if report_dir is not None:
        memory_report(pid, report_dir, 1)
    samples: list[tuple[float, int, int]] = []

    async def main() -> float:
        stop = asyncio.Event()

        async def sample() -> None:
            t0 = time.perf_counter()
            while not stop.is_set():
                rss, fds = process_stats(pid)
                samples.append((time.perf_counter() - t0, rss, fds))
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass

        sampler = asyncio.ensure_future(sample())
        try:
            return await soak.run(plan[WARMUP:])
        finally:
            stop.set()
            await sampler

    elapsed = asyncio.run(main())
    end_rss, end_fds = settled_stats(pid, baseline_fds=warm_fds)
    end_split = proc_status(pid)
    assert server.proc.poll() is None, server.output()[-3000:]
    if report_dir is not None:
        memory_report(pid, report_dir, 2)
        growth = memory_diff(str(report_dir / "memory-1.json"), str(report_dir / "memory-2.json"))
        (report_dir / "growth.txt").write_text(growth)
        print("\nmemory growth after warm-up:\n" + growth)

    latencies = [seconds for _, ok, seconds in soak.results if ok]
    by_kind = defaultdict(list)
    for kind, _, seconds in soak.results:
        by_kind[kind].append(seconds)
    report = {
        "requests": len(soak.results),
        "concurrency": CONCURRENCY,
        "requests_per_second_after_warmup": round((len(plan) - WARMUP) / elapsed, 1),
        "latency_s": {q: round(percentile(latencies, n), 3) for q, n in (("p50", 50), ("p95", 95), ("p99", 99))},
        "latency_p95_s_by_kind": {k: round(percentile(v, 95), 3) for k, v in sorted(by_kind.items())},
        "kinds": dict(Counter(kind for kind, _, _ in soak.results)),
        "rss_mib": {
            "start": start_rss >> 20,
            "after_warmup": warm_rss >> 20,
            "max": max(s[1] for s in samples) >> 20 if samples else None,
            "end": end_rss >> 20,
            # anonymous (heap, arenas, tensors) and file-backed (mapped libraries) pages
            "anon": [start_split["RssAnon"] >> 10, warm_split["RssAnon"] >> 10, end_split["RssAnon"] >> 10],
            "file": [start_split["RssFile"] >> 10, warm_split["RssFile"] >> 10, end_split["RssFile"] >> 10],
            # RSS at each tenth of the run after warm-up: steps that flatten, or a slope
            "after_warmup_by_tenth": [samples[i * len(samples) // 10][1] >> 20 for i in range(10)]
            + [samples[-1][1] >> 20]
            if samples
            else None,
        },
        "rss_growth_after_warmup_pct": round(100 * (end_rss / warm_rss - 1), 1),
        "fds": {
            "start": start_fds,
            "after_warmup": warm_fds,
            "max": max(s[2] for s in samples) if samples else None,
            "end": end_fds,
        },
        "failures": len(soak.failures),
    }
    print("\nsoak:", json.dumps(report, indent=2))
    if os.environ.get("FLASHTTS_SOAK_REPORT"):
        Path(os.environ["FLASHTTS_SOAK_REPORT"]).write_text(json.dumps(report, indent=2))

    assert not soak.failures, f"{len(soak.failures)} failures, first ones:\n" + "\n".join(soak.failures[:20])
    assert set(report["kinds"]) == set(Soak.KINDS)
    assert end_rss <= warm_rss * (1 + RSS_GROWTH), (
        f"RSS grew from {warm_rss >> 20} to {end_rss >> 20} MiB after warm-up (bound {RSS_GROWTH:.0%}: live "
        "memory; freed heap is given back when idle, memory_trim.py). FLASHTTS_MEMORY_REPORT=DIR shows where it went."
    )
    assert end_fds <= warm_fds, f"open file descriptors grew from {warm_fds} to {end_fds}"
    # Roles left behind are listed and the saved one still speaks.
    with server.client() as client:
        saved = set(client.get("/audio_roles").json()["saved"])
        assert saved == {FIXED_ROLE, *soak.roles}
        assert (
            client.post("/speak", json={"name": FIXED_ROLE, "text": "Still here.", "max_tokens": 5}).status_code == 200
        )
