"""MegaTTS3 in the end-to-end benchmark (upstream's sizes, a tiny G2P LLM): ``/speak`` with a saved
role and ``/clone_voice``, on the torch backend."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from e2e_server import bench_server, fmt, peak_rss_gb, stream_audio

from tests.server_process import Server

MEGA_TEXT = "The quick brown fox jumps over the lazy dog, and then it runs back home again."
MEGA_FULL_CONCURRENCY = [1]  # one full-size DiT request is minutes of CPU work at 32 steps
MEGA_RATE = 24000


@dataclass
class MegaResult:
    backend: str = "torch"
    status: str = "ok"
    load_s: float | None = None
    add_speaker_s: float | None = None  # the reference aligned once and saved as a role
    audio_s: float | None = None  # audio per request (the random duration model decides it)
    rtf: dict = field(default_factory=dict)  # route (speak: saved role; clone: aligned per request) -> RTF at c=1
    aggregate: dict = field(default_factory=dict)  # concurrency -> audio s per wall s (/speak)
    first_audio_s: float | None = None
    peak_rss_gb: float | None = None
    rss_gb: float | None = None


def prepare_mega(cache: Path, size: str) -> Path:
    model = cache / ("mega-full" if size == "full" else "mega-tiny")
    if size == "full":
        from mega import write_full_size

        return write_full_size(model)  # its own .complete marker
    if not (model / ".complete").is_file():
        from flashtts_mega.tiny_model import write_tiny_mega

        write_tiny_mega(model)
        (model / ".complete").write_text("ok")
    return model


def mega_speak(client, seed: int, time_step: int, text: str = MEGA_TEXT):
    body = {"name": "bench", "text": text, "time_step": time_step, "seed": seed, "response_format": "pcm",
            "stream": True}  # fmt: skip
    return stream_audio(client, "/speak", MEGA_RATE, json=body)


def mega_clone(client, files: dict, seed: int, time_step: int):
    form = {"text": MEGA_TEXT, "time_step": str(time_step), "seed": str(seed), "response_format": "pcm",
            "stream": "true"}  # fmt: skip
    return stream_audio(client, "/clone_voice", MEGA_RATE, data=form, files=files)


async def measure_mega(server: Server, model: Path, args, result: MegaResult) -> None:
    import httpx

    wav = ("example.wav", (model / "example.wav").read_bytes(), "audio/wav")
    latent = ("example.npy", (model / "example.npy").read_bytes(), "application/octet-stream")
    steps = args.mega_time_step
    async with httpx.AsyncClient(base_url=server.url, timeout=3600) as client:
        start = time.perf_counter()
        form, files = {"name": "bench", "overwrite": "true"}, {"audio_file": wav, "latent_file": latent}
        added = await client.post("/add_speaker", data=form, files=files)
        if added.status_code != 200:
            raise RuntimeError(f"/add_speaker answered {added.status_code}: {added.text[:300]}")
        result.add_speaker_s = time.perf_counter() - start
        await mega_speak(client, seed=0, time_step=2, text="Hi.")  # warm-up
        wall, audio, first = await mega_speak(client, seed=1, time_step=steps)
        result.audio_s, result.first_audio_s, result.rtf["speak"] = audio, first, wall / audio
        print(f"  mega: /speak (saved role), {audio:.1f} s of audio: {wall:.1f} s (RTF {wall / audio:.2f}), "
              f"first audio {first:.2f} s", flush=True)  # fmt: skip
        wall, audio, _ = await mega_clone(client, {"reference_audio_file": wav, "latent_file": latent}, 1, steps)
        result.rtf["clone"] = wall / audio
        print(f"  mega: /clone_voice, {audio:.1f} s of audio: {wall:.1f} s (RTF {wall / audio:.2f})", flush=True)
        for c in args.mega_concurrency:
            if c == 1:  # the /speak request above
                result.aggregate[c] = 1 / result.rtf["speak"]
                continue
            start = time.perf_counter()
            outs = await asyncio.gather(*(mega_speak(client, seed=10 + i, time_step=steps) for i in range(c)))
            result.aggregate[c] = sum(audio for _, audio, _ in outs) / (time.perf_counter() - start)
            print(f"  mega: c={c}: {result.aggregate[c]:.2f} audio s per wall s", flush=True)


def bench_mega(cache: Path, args, logs: Path) -> dict:
    from flashtts_core.errors import BackendUnavailable
    from flashtts_core.plugins import get_plugin_manager

    if "mega" not in get_plugin_manager().engines:
        return {"results": [asdict(MegaResult(status="skipped: flashtts-mega is not installed"))]}
    model = prepare_mega(cache, args.size)
    result = MegaResult()
    try:
        get_plugin_manager().backends["torch"].check_available()
    except (BackendUnavailable, KeyError) as exc:
        result.status = f"skipped: {exc}"
    else:
        # The backend runs only the G2P LLM, tiny here and a small share of the time: torch only.
        extra = ["--role_dir", str(logs / "mega-roles"), "--wait_timeout", "0.05", *args.server_args]
        concurrency = max(args.mega_concurrency + [1])
        print(f"mega torch: starting the server (log: {logs / 'server-mega-torch.log'})", flush=True)
        server = bench_server(model, "torch", args.mega_dtype, concurrency, logs / "server-mega-torch.log", extra)
        try:
            result.load_s = server.wait_healthy(args.load_timeout, tail=1500)
            print(f"  mega: loaded in {result.load_s:.1f} s", flush=True)
            asyncio.run(measure_mega(server, model, args, result))
            result.peak_rss_gb = peak_rss_gb(server.proc.pid)
            result.rss_gb = peak_rss_gb(server.proc.pid, "VmRSS")
        except Exception as exc:
            result.status = f"failed: {str(exc)[:300]}"
        finally:
            server.stop(timeout=30)
    print()
    if args.size == "full":
        what = "MegaTTS3 (full size: DiT 459M, WaveVAE decoder 226M, aligner 55M, duration LM at upstream's sizes"
        what += "; the G2P LLM is TINY"
    else:
        what = "MegaTTS3 (TINY test model: plumbing only, the speeds mean nothing"
    print(f"{what}; random weights), torch backend, --torch_dtype {args.mega_dtype}, time_step {args.mega_time_step}")
    agg_cols = [f"x RT c={c}" for c in args.mega_concurrency]
    header = ["backend", "audio s", "RTF speak", "RTF clone", *agg_cols, "1st audio s", "add role s", "load s",
              "peak RSS GB", "RSS GB"]  # fmt: skip
    print("".join(h.rjust(12) if i else h.ljust(16) for i, h in enumerate(header)))
    if result.status != "ok" and not result.rtf:
        print(f"{result.backend:<16}{result.status}")
    else:
        cells = [fmt(result.audio_s, ".1f"), fmt(result.rtf.get("speak"), ".2f"), fmt(result.rtf.get("clone"), ".2f")]
        cells += [fmt(result.aggregate.get(c), ".2f") for c in args.mega_concurrency]
        cells += [fmt(result.first_audio_s, ".2f"), fmt(result.add_speaker_s, ".1f"), fmt(result.load_s, ".1f"),
                  fmt(result.peak_rss_gb, ".2f"), fmt(result.rss_gb, ".2f")]  # fmt: skip
        status = "" if result.status == "ok" else f"  {result.status}"
        print(f"{result.backend:<16}" + "".join(c.rjust(12) for c in cells) + status)
    print("speak: a saved role (aligned once, 'add role s'); clone: /clone_voice aligns the reference in the request;")
    print("audio length is what the random duration model decides; the c=1 aggregate is the speak request's figure")
    return {
        "model": f"MegaTTS3, {args.size}-size random weights" + (", tiny G2P LLM" if args.size == "full" else ""),
        "time_step": args.mega_time_step,
        "dtype": args.mega_dtype,
        "concurrency": args.mega_concurrency,
        "results": [asdict(result)],
    }
