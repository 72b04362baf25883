"""End-to-end speed of FlashTTS on full-size random checkpoints, measured through HTTP.

    python bench/e2e.py                                   # everything (tens of minutes on 2 cores)
    python bench/e2e.py --backends torch,llama-cpp-q8_0 --durations 5 --concurrency 1,4
    nox -s bench -- --backends llama-cpp-q8_0 --durations 5 --concurrency 1
    python bench/e2e.py --models orpheus --backends torch,llama-cpp-q8_0   # one model
    python bench/e2e.py --size tiny --backends torch --durations 1 --concurrency 2   # smoke, ~1 min

It writes a full-size random Spark-TTS-0.5B once (kept in --cache, ~4 GB with GGUFs), its LLM
biased so that every generation runs to max_tokens (``duration x 50`` semantic tokens: exactly that
much audio), then per backend starts a real ``flashtts serve`` on 127.0.0.1 and measures:

- load: seconds from process start to a healthy /health;
- RTF at concurrency 1 for each --durations (wall time / audio seconds; 1 = real time), cloning a
  voice through ``/clone_voice`` with a reference clip uploaded in every request;
- aggregate audio seconds per wall second at each --concurrency (5 s of audio per request);
- first audio: seconds to the first audio bytes of a streamed ``/clone_voice`` (pcm);
- peak RSS of the server process and its children (VmHWM, summed);
- the split: codec seconds per audio second (BiCodec decode alone, in this process, float32 and
  bfloat16), and LLM tokens/s derived from the c=1 request time less the codec time (every request
  sends the same clip, so after the warm-up the server's reference cache skips its encode);
- the machine's memory read bandwidth, and each backend's tokens/s as a fraction of the
  bandwidth bound (bytes of weights read per decode step for that model and dtype).

``--models`` also runs Orpheus 3B (full size, bf16, 6.6 GB; weights shaped to speak well-formed
7-id frames and never stop, so ``max_tokens`` fixes the audio; /v1/audio/speech with voice tara;
by default 5 s at c=1 only, it is slow on CPU) and MegaTTS3 (upstream's sizes, tiny G2P LLM; /speak
with a saved role and /clone_voice, time_step 32, c=1), each with its own table and JSON section.

Random weights make noise, not speech: only the speed means anything. The machine's other load
distorts wall times; the table says how many CPU cores the run had.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.server_process: the one server helper

from e2e_mega import MEGA_FULL_CONCURRENCY, bench_mega  # noqa: E402
from e2e_orpheus import ORPHEUS_FULL_CONCURRENCY, ORPHEUS_FULL_DURATIONS, bench_orpheus  # noqa: E402
from e2e_server import BACKENDS, memory_bandwidth_gbs  # noqa: E402
from e2e_spark import bench_spark, prepare_spark  # noqa: E402

MODELS = ("spark", "orpheus", "mega")


def main() -> None:
    args = parse_args()
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        sys.exit(f"unknown backends {unknown}; choose from {', '.join(BACKENDS)}")
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        sys.exit(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    ggufs = {BACKENDS[b][1] for b in args.backends if BACKENDS[b][1]}
    model = prepare_spark(cache, ggufs, args.size) if "spark" in args.models else None
    bandwidth = memory_bandwidth_gbs()
    machine = {
        "cores": os.cpu_count(),
        "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "bandwidth_gbs": bandwidth,
        "platform": platform.platform(),
        "processor": platform.processor(),
    }
    # Server logs are kept beside the JSON: a failed backend's reason is in its log.
    logs = Path(args.json).resolve().parent / "bench-e2e-logs"
    logs.mkdir(parents=True, exist_ok=True)
    report = {
        "model": f"Spark-TTS-0.5B, {args.size}-size random weights",
        "machine": machine,
        "codec": {},
        "args": vars(args),
        "results": [],
    }
    if model is not None:
        split, results = bench_spark(model, args, logs, bandwidth, machine)
        report.update(codec=split, results=[asdict(r) for r in results])
        write_report(report, args.json)
    # Each model's section is written as soon as it is measured: a long run keeps what it has.
    if "orpheus" in args.models:
        report["orpheus"] = bench_orpheus(cache, args, logs, bandwidth)
        write_report(report, args.json)
    if "mega" in args.models:
        report["mega"] = bench_mega(cache, args, logs)
        write_report(report, args.json)


def write_report(report: dict, path: str) -> None:
    Path(path).write_text(json.dumps(report, indent=2))
    print(f"wrote {path}", flush=True)


def csv(kind):
    return lambda text: [kind(x) for x in text.split(",") if x]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--backends", type=csv(str), default=list(BACKENDS), help=f"comma-separated: {', '.join(BACKENDS)}"
    )
    parser.add_argument("--durations", type=csv(int), default=[5, 20], help="seconds of audio at c=1 (comma-separated)")
    parser.add_argument("--concurrency", type=csv(int), default=[4, 16], help="concurrent requests (comma-separated)")
    parser.add_argument("--no-stream", dest="stream", action="store_false", help="skip the first-audio measurement")
    parser.add_argument("--torch-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument(
        "--cache", default=str(Path.home() / ".cache" / "flashtts" / "bench"), help="checkpoints kept here"
    )
    parser.add_argument("--json", default="bench-e2e.json", help="where the results go")
    parser.add_argument("--load-timeout", type=float, default=600)
    parser.add_argument(
        "--server-args",
        type=str.split,
        default=[],
        help='flags every server gets, one string: --server-args "--detokenizer_dtype bfloat16"',
    )
    parser.add_argument("--models", type=csv(str), default=list(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument(
        "--size", choices=["full", "tiny"], default="full", help="tiny: the engines' test models (a quick smoke run)"
    )
    parser.add_argument(
        "--orpheus-durations", type=csv(int), help=f"Orpheus c=1 seconds (full size default {ORPHEUS_FULL_DURATIONS})"
    )
    parser.add_argument(
        "--orpheus-concurrency", type=csv(int), help=f"Orpheus concurrency (full size {ORPHEUS_FULL_CONCURRENCY})"
    )
    parser.add_argument(
        "--mega-concurrency", type=csv(int), help=f"MegaTTS3 concurrency (full size default {MEGA_FULL_CONCURRENCY})"
    )
    parser.add_argument("--mega-time-step", type=int, default=32, help="MegaTTS3 DiT steps (upstream 32)")
    parser.add_argument("--mega-dtype", default="auto", help="MegaTTS3 --torch_dtype (auto: float32 on CPU)")
    args = parser.parse_args()
    # Full size, Orpheus (3B) and MegaTTS3 (a DiT) run a smaller plan than Spark; tiny runs Spark's.
    full = args.size == "full"
    if args.orpheus_durations is None:
        args.orpheus_durations = ORPHEUS_FULL_DURATIONS if full else args.durations
    if args.orpheus_concurrency is None:
        args.orpheus_concurrency = ORPHEUS_FULL_CONCURRENCY if full else args.concurrency
    if args.mega_concurrency is None:
        args.mega_concurrency = MEGA_FULL_CONCURRENCY if full else args.concurrency
    return args


if __name__ == "__main__":
    main()
