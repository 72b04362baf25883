"""MegaTTS3 through a real `flashtts serve`: real-time factor and time to first audio at several
concurrencies, on a full-size random checkpoint.

    python bench/mega.py                                  # full-size modules, CPU, torch backend
    python bench/mega.py --device cuda --concurrency 1 4 8 --time-step 32
    python bench/mega.py --size tiny                      # the tiny test model (plumbing only)

The aligner, duration model, DiT and WaveVAE decoder are written at upstream's sizes with random
weights (DiT 458.8M, WaveVAE decoder 226.1M, aligner 54.6M parameters; ~3 GB in float32, written
once into --workdir); g2p/ is the tiny Qwen2 (the G2P LLM's speed is the backends' business, see
bench/backends.py; the DiT is most of the compute). The reference is saved once as a role
(/add_speaker: alignment, timed), then for every concurrency c, c clients post /speak with that
role together (streamed pcm, distinct seeds); ``--route clone`` posts /clone_voice instead, which
aligns the reference in every request as upstream does. RTF = wall time / seconds of audio per
request (median); first audio = time to the first audio byte (median). Random weights make noise:
only the speed means anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs back home again."


def write_full_size(path: Path, seed: int = 0) -> Path:
    """Every MegaTTS3 folder at upstream's sizes (the default configurations) with random weights,
    plus example.wav / example.npy."""
    from flashtts_mega.config import DiTConfig
    from flashtts_mega.tiny_model import (
        write_example,
        write_random_aligner,
        write_random_dit,
        write_random_duration,
        write_random_wavvae,
        write_tiny_g2p,
    )

    marker = path / ".complete"
    if marker.is_file():
        return path
    path.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    write_random_dit(path / "diffusion_transformer", seed=seed)
    write_random_aligner(path / "aligner_lm", seed=seed)
    write_random_duration(path / "duration_lm", seed=seed)
    write_random_wavvae(path / "wavvae", seed=seed)
    write_tiny_g2p(path / "g2p", seed=seed)
    write_example(path, win_size=DiTConfig().win_size, seed=seed)
    marker.write_text("ok")
    print(f"wrote a full-size random MegaTTS3 to {path} in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def one_request(url: str, files: dict | None, form: dict, out: dict) -> None:
    """One streamed request: /clone_voice (multipart) when ``files`` is given, else /speak (JSON)."""
    import httpx

    start = time.perf_counter()
    first = None
    size = 0
    if files is not None:
        request = {"url": f"{url}/clone_voice", "data": form, "files": files}
    else:
        typed = {k: (v == "true" if v in ("true", "false") else int(v) if v.isdigit() else v) for k, v in form.items()}
        request = {"url": f"{url}/speak", "json": {"name": "bench", **typed}}
    with httpx.Client(timeout=3600) as client, client.stream("POST", **request) as r:
        if r.status_code != 200:
            out["error"] = f"{r.status_code}: {r.read()[:300]!r}"
            return
        for piece in r.iter_bytes():
            if piece and first is None:
                first = time.perf_counter() - start
            size += len(piece)
    out.update(wall=time.perf_counter() - start, first=first, seconds=size / 2 / 24000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "flashtts-bench-mega")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="--torch_dtype of the server (the DiT's precision)")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--time-step", type=int, default=32, help="DiT steps (upstream 32)")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--route", choices=("speak", "clone"), default="speak")
    args = parser.parse_args()

    from conftest import start_server

    if args.size == "full":
        model = write_full_size(args.workdir / "full")
    else:
        from flashtts_mega.tiny_model import write_tiny_mega

        model = args.workdir / "tiny"
        if not (model / "example.npy").is_file():
            write_tiny_mega(model)
    files = {
        "reference_audio_file": ("example.wav", (model / "example.wav").read_bytes(), "audio/wav"),
        "latent_file": ("example.npy", (model / "example.npy").read_bytes(), "application/octet-stream"),
    }
    logs = args.workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = start_server(
        ["--model_path", str(model), "--backend", args.backend, "--llm_device", args.device,
         "--tokenizer_device", args.device, "--detokenizer_device", args.device, "--torch_dtype", args.dtype,
         "--batch_size", str(max(args.concurrency)), "--wait_timeout", "0.05", "--role_dir", str(args.workdir / "roles"),
         "--log_level", "info"],
        logs, timeout=900,
    )  # fmt: skip
    print(
        f"server up: {model} ({args.size}) on {args.device}, DiT steps {args.time_step}, route {args.route}; "
        f"cores {os.cpu_count()}"
    )
    try:
        import httpx

        start = time.perf_counter()
        added = httpx.post(f"{server.url}/add_speaker", data={"name": "bench", "overwrite": "true"},
                           files={"audio_file": files["reference_audio_file"], "latent_file": files["latent_file"]},
                           timeout=3600)  # fmt: skip
        if added.status_code != 200:
            print("add_speaker failed:", added.text)
            return 1
        print(f"reference aligned and saved as a role in {time.perf_counter() - start:.1f} s")
        send = files if args.route == "clone" else None
        print("concurrency | audio s/request | RTF (median) | first audio s (median) | wall s")
        warm: dict = {}
        one_request(
            server.url, send, {"text": "Hi.", "time_step": "2", "response_format": "pcm", "stream": "true"}, warm
        )
        if "error" in warm:
            print("warm-up failed:", warm["error"])
            return 1
        for c in args.concurrency:
            results = [{} for _ in range(c)]
            forms = [
                {"text": args.text, "time_step": str(args.time_step), "seed": str(i), "response_format": "pcm",
                 "stream": "true"}
                for i in range(c)
            ]  # fmt: skip
            threads = [
                threading.Thread(target=one_request, args=(server.url, send, f, r)) for f, r in zip(forms, results)
            ]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            errors = [r["error"] for r in results if "error" in r]
            if errors:
                print(f"{c:>11} | failed: {errors[0]}")
                continue
            rtf = statistics.median(r["wall"] / r["seconds"] for r in results)
            first = statistics.median(r["first"] for r in results)
            audio = statistics.median(r["seconds"] for r in results)
            print(f"{c:>11} | {audio:15.2f} | {rtf:12.2f} | {first:22.2f} | {wall:6.1f}", flush=True)
        batches = [line for line in server.output().splitlines() if "requests in one batch" in line]
        print(f"DiT batches of several requests: {len(batches)}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
