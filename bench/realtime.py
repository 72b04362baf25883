"""Voice-agent latency over the Cartesia WebSocket (``/tts/websocket``) of a real ``flashtts serve``.

    python bench/realtime.py                                    # spark, orpheus, mega on torch; 1, 4, 16 contexts
    python bench/realtime.py --engines spark --contexts 1       # one quick point (full size)
    python bench/realtime.py --engines spark --backends torch,llama-cpp-q8_0 --contexts 1,4
    python bench/realtime.py --tiny                             # the engines' test models: a smoke run

Per engine and backend it starts a server (full-size random checkpoints from bench/checkpoints.py, kept
in --cache; ``--tiny``: the engines' test models) and, at each ``--contexts`` N, opens N sockets (one
voice agent each) that all at once send an LLM-like reply: ``--tokens`` words every ``--interval`` s,
``continue: true``, then ``continue: false``. It reports:

- first audio: seconds from sending the piece that ends the reply's first clause (its first sentence)
  to the first audio byte of that context, p50 and p95 over the contexts;
- starvation: the largest gap between two audio chunks of a context, and the playback stall a client
  playing from its first chunk would hear (audio arriving later than the audio before it has played
  out; 0 = the server kept ahead of real time), the worst context;
- cancel: N contexts (the reply four times over) each cancelled after their first audio; seconds from the last cancel to
  ``/server_info`` ``active_generations`` back at 0, and audio chunks that still arrived after a cancel.

Random weights make noise, not speech: only the timings mean anything. MegaTTS3 at full size runs its
DiT at 32 steps per segment: minutes per context on a CPU (pick ``--engines`` accordingly).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.server_process: the one server helper

from e2e_server import BACKENDS, backend_plan, bench_server, gguf_variant, peak_rss_gb  # noqa: E402

ENGINES = ("spark", "orpheus", "mega")
VOICES = {"spark": "female", "orpheus": "tara", "mega": "bench"}  # mega: a role saved from the example
REPLY = (
    "Sure, I can help with that. Your order shipped this morning and should arrive on Thursday. "
    "Is there anything else I can do for you?"
)
TINY_REPLY = "Sure, I can help. See you soon."  # --tiny: each tiny segment runs to its bound (seconds)


@dataclass
class Level:
    contexts: int
    first_audio_p50_s: float | None = None
    first_audio_p95_s: float | None = None
    max_gap_s: float | None = None
    stall_s: float | None = None  # worst context's total playback stall
    audio_s: float | None = None  # per context (mean)
    wall_s: float | None = None
    cancel_freed_s: float | None = None
    chunks_after_cancel: int | None = None
    errors: list = field(default_factory=list)


@dataclass
class Row:
    engine: str
    backend: str
    status: str = "ok"
    load_s: float | None = None
    peak_rss_gb: float | None = None
    levels: list = field(default_factory=list)


def pieces(text: str, tokens: int) -> list[str]:
    """``text`` as an LLM streams it: ``tokens`` words (with their leading space) per piece."""
    words = text.split(" ")
    words = [words[0]] + [" " + w for w in words[1:]]
    return ["".join(words[i : i + tokens]) for i in range(0, len(words), tokens)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def message(context_id: str, transcript: str, more: bool, voice: str, rate: int) -> str:
    return json.dumps(
        {
            "context_id": context_id,
            "transcript": transcript,
            "continue": more,
            "voice": {"mode": "id", "id": voice},
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": rate},
            "model_id": "flashtts",
        }
    )


async def one_context(url: str, voice: str, rate: int, text: str, args, cancel_after_first: bool = False) -> dict:
    """One voice agent: a socket, one context, the reply streamed in; what arrived and when."""
    from websockets.asyncio.client import connect

    out = {"clause_sent": None, "chunks": [], "error": None, "cancelled_at": None, "after_cancel": 0}
    context_id = "ctx"
    async with connect(url, open_timeout=args.load_timeout, max_size=None) as ws:

        async def send() -> None:
            sent = 0
            for piece in pieces(text, args.tokens):
                await ws.send(message(context_id, piece, True, voice, rate))
                sent += len(piece)
                if out["clause_sent"] is None and sent >= text.index(".") + 1:
                    out["clause_sent"] = time.perf_counter()
                await asyncio.sleep(args.interval)
            if not cancel_after_first:
                await ws.send(message(context_id, "", False, voice, rate))

        sender = asyncio.ensure_future(send())
        try:
            while True:
                raw = await asyncio.wait_for(ws.recv(), timeout=args.read_timeout)
                now = time.perf_counter()
                msg = json.loads(raw)
                kind = msg.get("type")
                if kind == "chunk":
                    if out["cancelled_at"] is not None:
                        out["after_cancel"] += 1
                        continue
                    samples = len(base64.b64decode(msg["data"])) // 2
                    out["chunks"].append((now, samples / rate))
                    if cancel_after_first:
                        sender.cancel()
                        await ws.send(json.dumps({"context_id": context_id, "cancel": True}))
                        out["cancelled_at"] = time.perf_counter()
                        # Anything still in flight arrives within this wait (nothing more may be sent).
                        try:
                            while True:
                                late = json.loads(await asyncio.wait_for(ws.recv(), timeout=0.5))
                                out["after_cancel"] += late.get("type") == "chunk"
                        except asyncio.TimeoutError:
                            pass
                        break
                elif kind == "error":
                    out["error"] = msg.get("error")
                    break
                elif kind == "done":
                    break
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return out


def starvation(chunks: list[tuple[float, float]]) -> tuple[float, float]:
    """(largest gap between chunk arrivals, total stall of playback started at the first chunk)."""
    gap = max((b[0] - a[0] for a, b in zip(chunks, chunks[1:])), default=0.0)
    stall, play_end = 0.0, chunks[0][0]
    for arrived, seconds in chunks:
        if arrived > play_end:
            stall += arrived - play_end
        play_end = max(play_end, arrived) + seconds
    return gap, stall


async def active_generations(client) -> int:
    return (await client.get("/server_info")).json()["active_generations"]


async def measure_level(server, voice: str, rate: int, n: int, args) -> Level:
    import httpx

    level = Level(n)
    url = f"ws://127.0.0.1:{server.port}/tts/websocket?cartesia_version=2025-04-16"
    start = time.perf_counter()
    runs = await asyncio.gather(*(one_context(url, voice, rate, args.reply, args) for _ in range(n)))
    level.wall_s = time.perf_counter() - start
    level.errors = [r["error"] for r in runs if r["error"]]
    good = [r for r in runs if r["chunks"] and r["clause_sent"] is not None]
    if good:
        firsts = [r["chunks"][0][0] - r["clause_sent"] for r in good]
        level.first_audio_p50_s = statistics.median(firsts)
        level.first_audio_p95_s = percentile(firsts, 0.95)
        gaps = [starvation(r["chunks"]) for r in good]
        level.max_gap_s = max(g for g, _ in gaps)
        level.stall_s = max(s for _, s in gaps)
        level.audio_s = statistics.mean(sum(s for _, s in r["chunks"]) for r in good)
    if args.cancel:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            samples: list[tuple[float, int]] = []  # (when, active_generations), polled all along

            async def poll() -> None:
                while True:
                    samples.append((time.perf_counter(), await active_generations(client)))
                    await asyncio.sleep(0.01)

            poller = asyncio.ensure_future(poll())
            try:
                runs = await asyncio.gather(
                    *(
                        one_context(url, voice, rate, " ".join([args.reply] * 4), args, cancel_after_first=True)
                        for _ in range(n)
                    )
                )
                cancels = [r["cancelled_at"] for r in runs if r["cancelled_at"]]
                deadline = time.perf_counter() + 30
                while cancels and not any(t > max(cancels) and a == 0 for t, a in samples):
                    if time.perf_counter() > deadline:
                        break
                    await asyncio.sleep(0.01)
            finally:
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)
            if cancels:
                last = max(cancels)
                freed = next((t for t, a in samples if t > last and a == 0), None)
                level.cancel_freed_s = None if freed is None else freed - last
            level.chunks_after_cancel = sum(r["after_cancel"] for r in runs)
            level.errors += [r["error"] for r in runs if r["error"]]
    return level


async def measure(server, engine: str, model: Path, args, row: Row) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=server.url, timeout=args.load_timeout) as client:
        rate = (await client.get("/server_info")).json()["sample_rate"]
        if engine == "mega":
            files = {
                "audio_file": ("example.wav", (model / "example.wav").read_bytes(), "audio/wav"),
                "latent_file": ("example.npy", (model / "example.npy").read_bytes(), "application/octet-stream"),
            }
            added = await client.post("/add_speaker", data={"name": VOICES["mega"], "overwrite": "true"}, files=files)
            if added.status_code != 200:
                raise RuntimeError(f"/add_speaker answered {added.status_code}: {added.text[:300]}")
    # Warm-up: one short sentence (a full-size CPU run speaks a few times slower than real time).
    args_warm = argparse.Namespace(**{**vars(args), "cancel": False, "reply": "Hello."})
    await measure_level(server, VOICES[engine], rate, 1, args_warm)  # warm-up
    for n in args.contexts:
        level = await measure_level(server, VOICES[engine], rate, n, args)
        row.levels.append(asdict(level))
        print(f"  {engine} {row.backend} c={n}: {describe(level)}", flush=True)


def fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def describe(level: Level) -> str:
    text = (
        f"first audio p50 {fmt(level.first_audio_p50_s)} s p95 {fmt(level.first_audio_p95_s)} s, "
        f"max gap {fmt(level.max_gap_s)} s, stall {fmt(level.stall_s)} s, audio {fmt(level.audio_s, '.2f')} s, "
        f"cancel freed {fmt(level.cancel_freed_s)} s ({fmt(level.chunks_after_cancel, 'd')} late chunks)"
    )
    return text + (f", errors: {level.errors[:2]}" if level.errors else "")


def prepare(engine: str, cache: Path, gguf: str | None, tiny: bool) -> Path:
    size = "tiny" if tiny else "full"
    if engine == "spark":
        from e2e_spark import prepare_spark

        model = prepare_spark(cache, {gguf} if gguf else set(), size)
        return cache / f"{model.name}-{gguf}" if gguf else model
    if engine == "orpheus":
        from e2e_orpheus import prepare_orpheus

        model = prepare_orpheus(cache, set(), size)
        return gguf_variant(model, gguf) if gguf else model
    from e2e_mega import prepare_mega

    return prepare_mega(cache, size)


def run_engine(engine: str, name: str, args, logs: Path) -> Row:
    row = Row(engine, name)
    plan, backend, gguf, _, dtype = backend_plan(name, args)
    if plan.status != "ok":
        row.status = plan.status
        return row
    if engine == "mega" and backend != "torch":
        row.status = "skipped: MegaTTS3 runs on torch here (its backend runs only the G2P LLM)"
        return row
    try:
        model = prepare(engine, Path(args.cache).expanduser(), gguf, args.tiny)
    except Exception as exc:
        row.status = f"failed: {str(exc)[:300]}"
        return row
    extra = ["--role_dir", str(logs / f"roles-{engine}"), *args.server_args]
    if engine == "mega":
        dtype = "auto"
        extra += ["--wait_timeout", "0.05"]
    log = logs / f"server-{engine}-{name}.log"
    print(f"{engine} {name}: starting the server (log: {log})", flush=True)
    server = bench_server(model, backend, dtype, max(args.contexts), log, extra)
    try:
        row.load_s = server.wait_healthy(args.load_timeout, tail=1500)
        print(f"  {engine} {name}: loaded in {row.load_s:.1f} s", flush=True)
        asyncio.run(measure(server, engine, model, args, row))
        row.peak_rss_gb = peak_rss_gb(server.proc.pid)
    except Exception as exc:  # the table says so; the next one still runs
        row.status = f"failed: {str(exc)[:300]}"
    finally:
        server.stop(timeout=30)
    return row


def print_table(rows: list[Row], args) -> None:
    print()
    size = "TINY test models (plumbing only, the speeds mean nothing)" if args.tiny else "full-size random weights"
    print(f"Realtime WebSocket (Cartesia protocol), {size}; {args.tokens} words every {args.interval * 1000:.0f} ms")
    header = ["engine/backend", "ctx", "1st p50 s", "1st p95 s", "max gap s", "stall s", "cancel s", "late"]
    print("".join(h.rjust(11) if i else h.ljust(22) for i, h in enumerate(header)))
    for row in rows:
        who = f"{row.engine}/{row.backend}"
        if not row.levels:
            print(f"{who:<22}{row.status}")
            continue
        for level in row.levels:
            cells = [
                str(level["contexts"]),
                fmt(level["first_audio_p50_s"]),
                fmt(level["first_audio_p95_s"]),
                fmt(level["max_gap_s"]),
                fmt(level["stall_s"]),
                fmt(level["cancel_freed_s"]),
                fmt(level["chunks_after_cancel"], "d"),
            ]
            print(f"{who:<22}" + "".join(c.rjust(11) for c in cells))


def csv(kind):
    return lambda text: [kind(x) for x in text.split(",") if x]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--engines", type=csv(str), default=list(ENGINES), help=f"comma-separated: {', '.join(ENGINES)}"
    )
    parser.add_argument("--backends", type=csv(str), default=["torch"], help=f"comma-separated: {', '.join(BACKENDS)}")
    parser.add_argument("--contexts", type=csv(int), default=[1, 4, 16], help="concurrent contexts (comma-separated)")
    parser.add_argument("--tokens", type=int, default=3, help="words per piece the client sends")
    parser.add_argument("--interval", type=float, default=0.03, help="seconds between pieces")
    parser.add_argument("--no-cancel", dest="cancel", action="store_false", help="skip the cancel round")
    parser.add_argument("--tiny", action="store_true", help="the engines' tiny test models (a smoke run)")
    parser.add_argument("--torch-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument(
        "--cache", default=str(Path.home() / ".cache" / "flashtts" / "bench"), help="checkpoints kept here"
    )
    parser.add_argument("--json", default="bench-realtime.json", help="where the results go")
    parser.add_argument("--load-timeout", type=float, default=600)
    parser.add_argument("--read-timeout", type=float, default=600, help="longest wait for one server message")
    parser.add_argument("--server-args", type=str.split, default=[], help="flags every server gets, one string")
    args = parser.parse_args(argv)
    unknown = [e for e in args.engines if e not in ENGINES] + [b for b in args.backends if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown engines/backends {unknown}")
    args.reply = TINY_REPLY if args.tiny else REPLY
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    Path(args.cache).expanduser().mkdir(parents=True, exist_ok=True)
    logs = Path(args.json).resolve().parent / "bench-realtime-logs"
    logs.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    report = {"args": vars(args), "results": []}
    for engine in args.engines:
        for name in args.backends:
            rows.append(run_engine(engine, name, args, logs))
            report["results"] = [asdict(r) for r in rows]
            Path(args.json).write_text(json.dumps(report, indent=2))
    print_table(rows, args)
    print(f"wrote {args.json}", flush=True)


if __name__ == "__main__":
    main()
