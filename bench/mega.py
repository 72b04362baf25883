"""MegaTTS3 through a real `flashtts serve`: real-time factor and time to first audio at several
concurrencies, on a full-size random checkpoint.

    python bench/mega.py                                  # full-size modules, CPU, torch backend
    python bench/mega.py --device cuda --concurrency 1 4 8 --time-step 32
    python bench/mega.py --size tiny                      # the tiny test model (plumbing only)
    python bench/mega.py --upstream ~/MegaTTS3 --concurrency 1 --route clone   # beside upstream's own CLI

The aligner, duration model, DiT and WaveVAE decoder are written at upstream's sizes with random
weights (DiT 458.8M, WaveVAE decoder 226.1M, aligner 54.6M parameters; ~3 GB in float32, written
once into --workdir); g2p/ is the tiny Qwen2 (the G2P LLM's speed is the backends' business, see
bench/backends.py; the DiT is most of the compute), scripted to give every segment the same 40
phones, so that ours and upstream's CLI do the same work. The reference is saved once as a role
(/add_speaker: alignment, timed), then for every concurrency c, c clients post /speak with that
role together (streamed pcm, distinct seeds); ``--route clone`` posts /clone_voice instead, which
aligns the reference in every request as upstream does. RTF = wall time / seconds of audio per
request (median); first audio = time to the first audio byte (median). Random weights make noise:
only the speed means anything.

``--upstream DIR`` then runs bytedance/MegaTTS3's own ``tts/infer_cli.py`` from its source checkout DIR
with DIR's own interpreter (``--upstream-python``, default DIR/.venv/bin/python) on the same model
folder (as its ``./checkpoints``), text, reference (example.wav, and example.npy beside it, as upstream
reads the latent) and ``--time_step``, as one process, and prints both RTFs side by side: upstream's
over the whole process (model loading included) and over its synthesis (from its "| Start processing"
line to its "| Saving results" line: aligning the reference, G2P, durations, DiT, decode), against
ours at concurrency 1 (``--route clone`` aligns the reference per request as upstream does), whose
speaking-rate bound is then off (upstream has none): both sides speak the duration model's lengths.
Upstream's run on a CPU is float32 (its float16 autocast is CUDA's); it needs ffmpeg (pydub).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs back home again."


# Bumped when what write_full_size writes changes, so that an older folder in --workdir is rewritten.
FULL_SIZE_LAYOUT = "3: scripted aligner and G2P, config keys and tokenizer upstream's CLI reads"


def write_full_size(path: Path, seed: int = 0) -> Path:
    """Every MegaTTS3 folder at upstream's sizes (the default configurations) with random weights,
    plus example.wav / example.npy. The aligner is scripted to align example.wav as ~12 phones a
    second (a random one's output is not an alignment upstream's own CLI can read), the tiny G2P to
    write the same 40 phones for any text (a random one never stops, and upstream bounds nothing)."""
    from flashtts_mega.aligner import pad_reference
    from flashtts_mega.config import DiTConfig
    from flashtts_mega.tiny_model import (
        example_wav,
        write_example,
        write_random_dit,
        write_random_duration,
        write_random_wavvae,
        write_scripted_aligner,
        write_scripted_g2p,
    )

    marker = path / ".complete"
    if marker.is_file() and marker.read_text() == FULL_SIZE_LAYOUT:
        return path
    path.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    win_size = DiTConfig().win_size
    write_random_dit(path / "diffusion_transformer", seed=seed)
    write_scripted_aligner(path / "aligner_lm", pad_reference(example_wav(seed=seed), win_size), seed=seed)
    write_random_duration(path / "duration_lm", seed=seed)
    write_random_wavvae(path / "wavvae", seed=seed)
    write_scripted_g2p(path / "g2p", seed=seed)
    write_example(path, win_size=win_size, seed=seed)
    marker.write_text(FULL_SIZE_LAYOUT)
    print(f"wrote a full-size random MegaTTS3 to {path} in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def bench_model(workdir: Path, size: str) -> Path:
    """The bench's MegaTTS3 folder in ``workdir``: full size (:func:`write_full_size`) or the tiny test model."""
    if size == "full":
        return write_full_size(workdir / "full")
    from flashtts_mega.tiny_model import write_tiny_mega

    model = workdir / "tiny"
    if not (model / "example.npy").is_file():
        write_tiny_mega(model)
    return model


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


def upstream_command(upstream: Path, python: Path, wav: Path, text: str, out: Path, time_step: int) -> list[str]:
    """The command line of upstream's own CLI (tts/infer_cli.py, its argument names)."""
    return [str(python), str(upstream / "tts" / "infer_cli.py"), "--input_wav", str(wav), "--input_text", text,
            "--output_dir", str(out), "--time_step", str(time_step)]  # fmt: skip


def check_upstream(upstream: Path, python: Path | None) -> Path:
    """DIR's interpreter, after checking DIR is an upstream checkout; a SystemExit saying what is wrong."""
    if not (upstream / "tts" / "infer_cli.py").is_file():
        raise SystemExit(f"--upstream {upstream}: no tts/infer_cli.py there (a bytedance/MegaTTS3 source checkout?)")
    python = python or upstream / ".venv" / "bin" / "python"
    if not python.is_file():
        raise SystemExit(
            f"--upstream-python {python}: no such interpreter (upstream's own venv, with its requirements)"
        )
    return python


def run_upstream(
    upstream: Path, python: Path, model: Path, text: str, time_step: int, workdir: Path, timeout: float
) -> dict:
    """Upstream's tts/infer_cli.py once, in a folder whose ./checkpoints is ``model``: the process's wall
    time, its synthesis time (between the lines it prints), and the seconds of audio it wrote."""
    import soundfile as sf

    run = workdir / "upstream-run"
    out = run / "out"
    run.mkdir(parents=True, exist_ok=True)
    checkpoints = run / "checkpoints"
    if checkpoints.is_symlink() or checkpoints.exists():
        checkpoints.unlink()
    checkpoints.symlink_to(model.resolve(), target_is_directory=True)
    for name in ("example.wav", "example.npy"):  # upstream reads the latent beside the wav
        (run / name).write_bytes((model / name).read_bytes())
    for old in out.glob("*.wav"):
        old.unlink()
    command = upstream_command(upstream, python, run / "example.wav", text, out, time_step)
    env = {**os.environ, "PYTHONPATH": str(upstream.resolve())}
    log = workdir / "logs" / "upstream.log"
    marks: dict[str, float] = {}
    start = time.perf_counter()
    with open(log, "w") as sink:
        proc = subprocess.Popen(command, cwd=run, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        timer = threading.Timer(timeout, proc.kill)  # upstream bounds no segment's length
        timer.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            for mark in ("| Start processing", "| Saving results"):
                if line.startswith(mark):
                    marks.setdefault(mark, time.perf_counter() - start)
        code = proc.wait()
        timer.cancel()
    wall = time.perf_counter() - start
    wavs = sorted(out.glob("*.wav"))
    if code != 0 or not wavs:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        return {"error": f"upstream exited with {code} after {wall:.0f} s (log {log}):\n{tail}"}
    seconds = sf.info(str(wavs[0])).duration
    synthesis = marks.get("| Saving results", wall) - marks.get("| Start processing", 0.0)
    return {"wall": wall, "synthesis": synthesis, "seconds": seconds}


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
    parser.add_argument("--upstream", type=Path, default=None, help="a bytedance/MegaTTS3 checkout: run its CLI too")
    parser.add_argument("--upstream-python", type=Path, default=None, help="its interpreter (DIR/.venv/bin/python)")
    parser.add_argument("--upstream-timeout", type=float, default=3600, help="seconds upstream's run may take")
    args = parser.parse_args()
    upstream_python = check_upstream(args.upstream, args.upstream_python) if args.upstream else None
    if args.upstream and args.size != "full":
        parser.error("--upstream needs --size full (upstream's modules have the released sizes hard-coded)")

    from conftest import start_server

    model = bench_model(args.workdir, args.size)
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
         "--log_level", "info",
         # beside upstream, which bounds no segment, ours generates what the duration model says too
         *(["--speaking_rate_bound", "0"] if args.upstream else [])],
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
        rtfs: dict[int, float] = {}
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
            rtf = rtfs[c] = statistics.median(r["wall"] / r["seconds"] for r in results)
            first = statistics.median(r["first"] for r in results)
            audio = statistics.median(r["seconds"] for r in results)
            print(f"{c:>11} | {audio:15.2f} | {rtf:12.2f} | {first:22.2f} | {wall:6.1f}", flush=True)
        batches = [line for line in server.output().splitlines() if "requests in one batch" in line]
        print(f"DiT batches of several requests: {len(batches)}")
    finally:
        server.stop()
    if args.upstream and upstream_python:
        print(f"upstream: {args.upstream}/tts/infer_cli.py with {upstream_python}, {args.time_step} steps", flush=True)
        up = run_upstream(
            args.upstream, upstream_python, model, args.text, args.time_step, args.workdir, args.upstream_timeout
        )
        if "error" in up:
            print(up["error"])
            return 1
        whole, synthesis = up["wall"] / up["seconds"], up["synthesis"] / up["seconds"]
        print(f"upstream: {up['seconds']:.2f} s of audio; process {up['wall']:.1f} s (RTF {whole:.2f}), "
              f"synthesis {up['synthesis']:.1f} s (RTF {synthesis:.2f})")  # fmt: skip
        if 1 in rtfs:
            print(f"RTF at concurrency 1: ours ({args.route}, --torch_dtype {args.dtype}) {rtfs[1]:.2f}, upstream "
                  f"synthesis {synthesis:.2f}: upstream / ours = {synthesis / rtfs[1]:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
