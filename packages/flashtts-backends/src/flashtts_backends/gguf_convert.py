"""``flashtts convert gguf``: write a GGUF file for the llama-cpp backend from a Hugging Face LLM folder.

The conversion itself is llama.cpp's own ``convert_hf_to_gguf.py`` with the ``gguf-py`` it ships
(the PyPI ``gguf`` release lags behind it). Neither is in the llama-cpp-python wheel, only in its
sdist, so the converter comes from, in order: ``--llama-cpp-dir``, ``$FLASHTTS_LLAMA_CPP_DIR``, or
the sdist of the installed llama-cpp-python version, fetched once with pip into a cache folder.

The converter refuses a BPE tokenizer whose pre-tokenizer it does not know by hash (tiny test
tokenizers, and tokenizers whose added tokens changed the hash): we then name the pre-tokenizer from
the tokenizer.json regex itself, for the byte-level families the TTS models use (GPT-2, Qwen2,
Llama 3). llama.cpp also refuses a BPE vocabulary without merges (the tiny byte-level tokenizers):
such a vocabulary gets one merge of two tokens into a token that does not exist, which never applies.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Optional

from flashtts_core.progress import progress

logger = logging.getLogger("flashtts.convert")

# Types convert_hf_to_gguf.py writes directly.
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
# Types made from an f16 GGUF with llama.cpp's quantizer (llama_model_quantize through llama-cpp-python).
QUANTIZED_TYPES = {"q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}

# Pre-tokenizer regexes (as written in tokenizer.json) and the llama.cpp name for each.
_GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
_QWEN2_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
_LLAMA3_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
_PRE_TOKENIZERS = {_QWEN2_REGEX: "qwen2", _LLAMA3_REGEX: "llama-bpe", _GPT2_REGEX: "gpt-2"}

# Runs inside a fresh interpreter: the converter puts its own gguf-py first on sys.path, which must
# not meet a `gguf` imported elsewhere. argv: llama.cpp dir, fallback pre-tokenizer ("" = none),
# then the converter's own arguments.
_BOOTSTRAP = """
import runpy, sys
llama_dir, fallback = sys.argv[1], sys.argv[2]
sys.path[:0] = [llama_dir, llama_dir + "/gguf-py"]
if fallback:
    from conversion import base
    known = base.TextModel.get_vocab_base_pre
    def get_vocab_base_pre(self, tokenizer):
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            print(f"flashtts: unknown BPE pre-tokenizer hash, using {fallback!r} from tokenizer.json", file=sys.stderr)
            return fallback
    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
import gguf
add_to_gguf = gguf.SpecialVocab.add_to_gguf
def add_to_gguf_with_merges(self, gw, quiet=False):
    if self.load_merges and not self.merges:
        # llama.cpp refuses a BPE vocabulary without merges; a byte-level tokenizer without any
        # (the tiny test ones) gets one whose result is not in the vocabulary, which changes nothing.
        print("flashtts: the tokenizer has no BPE merges, writing a no-op one", file=sys.stderr)
        self.merges = ["\u0120\u0120 \u0120\u0120"]
    return add_to_gguf(self, gw, quiet)
gguf.SpecialVocab.add_to_gguf = add_to_gguf_with_merges
sys.argv = [llama_dir + "/convert_hf_to_gguf.py", *sys.argv[3:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class ConversionError(RuntimeError):
    """The model folder could not be converted; the message says why."""


def convert_to_gguf(
    model_dir: Path,
    *,
    outtype: str = "f16",
    outfile: Optional[Path] = None,
    llama_cpp_dir: Optional[Path] = None,
) -> Path:
    """Convert ``model_dir`` (a TTS model folder with an ``LLM`` subfolder, or the LLM folder itself)
    and return the written file, by default ``<LLM folder>/model-<outtype>.gguf``."""
    llm_dir = _llm_folder(Path(model_dir))
    outtype = outtype.lower()
    if outtype not in CONVERTER_TYPES and outtype not in QUANTIZED_TYPES:
        raise ConversionError(f"unknown type {outtype!r}: one of {', '.join([*CONVERTER_TYPES, *QUANTIZED_TYPES])}")
    outfile = Path(outfile) if outfile else llm_dir / f"model-{outtype}.gguf"
    quantized = outtype in QUANTIZED_TYPES
    with progress(f"GGUF of {llm_dir}", 3 if quantized else 2, logger) as p:
        with p.step("llama.cpp's converter"):
            llama_dir = find_llama_cpp_dir(llama_cpp_dir)
        if not quantized:
            with p.step("converted to %s (%s)", outfile, outtype):
                return _run_converter(llama_dir, llm_dir, outfile, outtype)
        with tempfile.TemporaryDirectory(dir=outfile.parent) as tmp:
            with p.step("converted to f16, the quantizer's input"):
                source = _run_converter(llama_dir, llm_dir, Path(tmp) / "model-f16.gguf", "f16")
            with p.step("quantized to %s (%s)", outfile, outtype):
                _quantize(source, outfile, QUANTIZED_TYPES[outtype])
        return outfile


def _llm_folder(model_dir: Path) -> Path:
    # Spark keeps its LLM in LLM/, MegaTTS3 its G2P LLM in g2p/; Orpheus is the LLM folder itself.
    for candidate in (model_dir / "LLM", model_dir / "g2p", model_dir):
        if (candidate / "config.json").is_file():
            return candidate
    raise ConversionError(f"{model_dir} holds no Hugging Face LLM (no config.json in it or in its LLM or g2p folder)")


def _run_converter(llama_dir: Path, llm_dir: Path, outfile: Path, outtype: str) -> Path:
    cmd = [
        sys.executable,
        "-c",
        _BOOTSTRAP,
        str(llama_dir),
        pre_tokenizer_name(llm_dir) or "",
        str(llm_dir),
        "--outfile",
        str(outfile),
        "--outtype",
        outtype,
    ]
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    logger.info("converting %s to %s (%s)", llm_dir, outfile, outtype)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not outfile.is_file():
        raise ConversionError(f"convert_hf_to_gguf.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return outfile


def _quantize(source: Path, outfile: Path, ftype: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(outfile).encode(), params)
    if status != 0:
        raise ConversionError(f"llama.cpp could not quantize {source.name} (status {status})")


def pre_tokenizer_name(llm_dir: Path) -> Optional[str]:
    """llama.cpp's name for the tokenizer's byte-level pre-tokenizer, read from tokenizer.json."""
    path = llm_dir / "tokenizer.json"
    if not path.is_file():
        return None
    pre = json.loads(path.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for step in steps:
        if step.get("type") == "Split":
            return _PRE_TOKENIZERS.get((step.get("pattern") or {}).get("Regex", ""))
        if step.get("type") == "ByteLevel" and step.get("use_regex", True):
            return "gpt-2"  # ByteLevel's built-in regex is GPT-2's
    return None


def find_llama_cpp_dir(explicit: Optional[Path] = None) -> Path:
    """A llama.cpp source folder holding convert_hf_to_gguf.py and gguf-py."""
    for candidate in (explicit, os.environ.get("FLASHTTS_LLAMA_CPP_DIR")):
        if candidate:
            path = Path(candidate)
            for folder in (path, path / "vendor" / "llama.cpp"):
                if (folder / "convert_hf_to_gguf.py").is_file():
                    return folder
            raise ConversionError(f"{path} holds no convert_hf_to_gguf.py")
    return _sdist_llama_cpp_dir()


def _sdist_llama_cpp_dir() -> Path:
    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError as exc:
        raise ConversionError(
            'the converter comes with llama-cpp-python: pip install "flashtts-backends[llama-cpp]"'
        ) from exc
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flashtts" / f"llama-cpp-python-{version}"
    folder = cache / "llama.cpp"
    if (folder / "convert_hf_to_gguf.py").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        logger.info("fetching the llama-cpp-python %s sdist for its GGUF converter", version)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={version}",
                "-d",
                tmp,
            ],
            capture_output=True,
            text=True,
        )
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if not archives:
            raise ConversionError(
                f"could not fetch the llama-cpp-python {version} sdist ({proc.stderr[-500:]}); "
                "pass --llama-cpp-dir or set FLASHTTS_LLAMA_CPP_DIR to a llama.cpp source folder"
            )
        _extract_converter(archives[0], Path(tmp) / "llama.cpp")
        (Path(tmp) / "llama.cpp").rename(folder)
    return folder


def _extract_converter(archive: Path, dest: Path) -> None:
    """Only what the converter needs: the script, its ``conversion`` package, ``gguf-py`` and models/."""
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "models/templates/")
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            _, _, rel = member.name.partition("/vendor/llama.cpp/")
            if rel and rel.startswith(wanted) and (member.isfile() or member.isdir()):
                member.name = rel
                tar.extract(member, dest, filter="data")
