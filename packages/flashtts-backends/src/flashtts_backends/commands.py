"""``flashtts convert gguf``, added to the CLI through the ``register_commands`` hook.

Only argparse here: the converter (and llama-cpp-python) load when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flashtts_core.commands import CommandError, CommandRunner

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k_m", "q5_k_m", "q6_k")


def configure_convert_gguf(parser: argparse.ArgumentParser) -> CommandRunner:
    parser.add_argument("model_dir", help="the TTS model directory (or its LLM folder)")
    parser.add_argument(
        "--outtype",
        default="f16",
        choices=OUTTYPES,
        help="weight type (default: f16); q4_*/q5_*/q6_k are quantized from an f16 conversion",
    )
    parser.add_argument("--outfile", type=Path, help="output file (default: MODEL_DIR/LLM/model-OUTTYPE.gguf)")
    parser.add_argument(
        "--llama-cpp-dir",
        dest="llama_cpp_dir",
        type=Path,
        help="a llama.cpp source folder with convert_hf_to_gguf.py (default: $FLASHTTS_LLAMA_CPP_DIR, "
        "else the installed llama-cpp-python's sdist, fetched once with pip)",
    )
    return run_convert_gguf


def run_convert_gguf(args: argparse.Namespace) -> int:
    from .gguf_convert import ConversionError, convert_to_gguf

    try:
        out = convert_to_gguf(
            Path(args.model_dir), outtype=args.outtype, outfile=args.outfile, llama_cpp_dir=args.llama_cpp_dir
        )
    except ConversionError as exc:
        raise CommandError(str(exc)) from None
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB); serve it with --backend llama-cpp")
    return 0
