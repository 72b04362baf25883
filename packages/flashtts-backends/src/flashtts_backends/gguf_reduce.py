"""A GGUF whose vocabulary holds only the tokens an engine may emit, and the full embedding table
beside it, so that llama.cpp's output head computes those rows only.

Spark's LLM has 166k vocabulary rows of which it ever samples ~12.3k (global, semantic, pitch/speed
value and stop tokens); Orpheus 28.7k of 157k. With tied embeddings the head is the embedding table,
so it is ~30% of the weights a decode step reads. :func:`reduced_gguf` rewrites a GGUF with the
token-embedding (and untied output) rows of the kept ids only, in ascending id order, and the
tokenizer arrays cut to match: row ``r`` of the reduced model is token ``kept[r]`` of the full one,
its bytes copied unchanged (no requantization), so every kept logit is computed from the same
weights as before. Tokens outside the kept set (the prompt's text) are fed to the reduced model as
embeddings read from the full file (:class:`EmbeddingRows`, dequantized by ggml's own routine, as
llama.cpp's ``get_rows`` does).

The file format (GGUF v2/v3: header, key/value pairs, tensor infos, aligned data) is read and
written here directly; unchanged key/value pairs are copied byte for byte.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np

logger = logging.getLogger("flashtts.backend.llama_cpp")

MAGIC = b"GGUF"
# Value types of GGUF key/value pairs.
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_SCALAR = {
    UINT8: "<B",
    INT8: "<b",
    UINT16: "<H",
    INT16: "<h",
    UINT32: "<I",
    INT32: "<i",
    FLOAT32: "<f",
    BOOL: "<?",
    UINT64: "<Q",
    INT64: "<q",
    FLOAT64: "<d",
}
GGML_TYPE_F32 = 0
# Tensors holding one row per vocabulary entry.
VOCAB_TENSORS = ("token_embd.weight", "output.weight")
# Tokenizer arrays with one entry per vocabulary entry.
VOCAB_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores")
# Bump when the written layout changes, so cached files are rewritten.
FORMAT_VERSION = 1


class GGUFError(ValueError):
    """Not a GGUF file this module can read."""


@dataclass
class TensorInfo:
    name: str
    shape: list[int]  # ggml order: shape[0] is the row length
    ggml_type: int
    offset: int  # relative to the data section


@dataclass
class GGUFFile:
    path: Path
    version: int
    fields: dict[str, tuple[int, bytes]]  # key -> (value type, the value's raw bytes after its type)
    tensors: list[TensorInfo]
    data_start: int
    alignment: int

    def value(self, key: str) -> Any:
        """A scalar, string or array value, decoded."""
        vtype, raw = self.fields[key]
        return _decode(vtype, raw, 0)[0]

    def tensor(self, name: str) -> TensorInfo:
        for info in self.tensors:
            if info.name == name:
                return info
        raise KeyError(name)


def read_gguf(path: Path) -> GGUFFile:
    """Parse the header of a GGUF file (key/value pairs and tensor infos; the data is not read)."""
    path = Path(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != MAGIC:
            raise GGUFError(f"{path} is not a GGUF file")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version not in (2, 3):
            raise GGUFError(f"{path}: GGUF version {version} is not supported")
        pos = 24
        fields: dict[str, tuple[int, bytes]] = {}
        for _ in range(n_kv):
            key, pos = _read_string(buf, pos)
            (vtype,) = struct.unpack_from("<I", buf, pos)
            start = pos + 4
            _, pos = _decode(vtype, buf, start, skip=True)
            fields[key] = (vtype, bytes(buf[start:pos]))
        tensors = []
        for _ in range(n_tensors):
            name, pos = _read_string(buf, pos)
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            shape = list(struct.unpack_from(f"<{n_dims}Q", buf, pos + 4))
            pos += 4 + 8 * n_dims
            ggml_type, offset = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            tensors.append(TensorInfo(name, shape, ggml_type, offset))
    alignment = 32
    if "general.alignment" in fields:
        alignment = _scalar(fields["general.alignment"])
    return GGUFFile(path, version, fields, tensors, _align(pos, alignment), alignment)


def reduced_gguf(full: Path, kept: Sequence[int], folder: Path | None = None) -> Path:
    """The GGUF of ``full`` cut to the vocabulary ``kept`` (ascending token ids), written once and
    then reused: ``<folder>/<stem>.rows-<n>-<hash>.gguf``, by default in a ``reduced`` folder beside
    ``full`` (or in the user's cache when that folder cannot be written)."""
    full = Path(full)
    kept = sorted(set(int(i) for i in kept))
    stat = full.stat()
    digest = hashlib.sha256(
        f"{FORMAT_VERSION}|{full.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{kept}".encode()
    ).hexdigest()[:12]
    name = f"{full.stem}.rows-{len(kept)}-{digest}.gguf"
    candidates = [folder] if folder is not None else [full.parent / "reduced", _cache_dir()]
    for candidate in candidates:
        if (candidate / name).is_file():
            return candidate / name
    last_error: OSError | None = None
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            return write_reduced(full, kept, candidate / name)
        except OSError as error:  # not writable (permissions, a read-only mount): the next place
            last_error = error
    raise OSError(f"could not write the reduced GGUF of {full} in {', '.join(map(str, candidates))}: {last_error}")


def write_reduced(full: Path, kept: Sequence[int], out: Path) -> Path:
    """Write ``out``: ``full`` with only the vocabulary rows ``kept`` (sorted, unique token ids)."""
    src = read_gguf(full)
    kept_ids = np.asarray(kept, dtype=np.int64)
    n_vocab = len(src.value("tokenizer.ggml.tokens"))
    if kept_ids.size == 0 or kept_ids[0] < 0 or kept_ids[-1] >= n_vocab or np.any(np.diff(kept_ids) <= 0):
        raise ValueError(f"kept token ids must be sorted, unique and in [0, {n_vocab})")
    index = {int(t): r for r, t in enumerate(kept_ids)}
    fields = dict(src.fields)
    for key in VOCAB_ARRAYS:
        if key in fields:
            values = src.value(key)
            if len(values) != n_vocab:
                raise GGUFError(f"{full}: {key} has {len(values)} entries for {n_vocab} tokens")
            subtype = struct.unpack_from("<I", fields[key][1], 0)[0]
            fields[key] = (ARRAY, _encode_array(subtype, [values[i] for i in kept_ids]))
    if "tokenizer.ggml.merges" in fields:
        # Merges are never applied (prompts come as ids, not text); llama.cpp wants one for BPE.
        fields["tokenizer.ggml.merges"] = (ARRAY, _encode_array(STRING, ["\u0120\u0120 \u0120\u0120"]))
    for key in list(fields):
        if key.startswith("tokenizer.ggml.") and key.endswith("_token_id"):
            old = _scalar(fields[key])
            if old in index:
                fields[key] = (UINT32, struct.pack("<I", index[old]))
            else:
                del fields[key]  # a special token the reduced model cannot emit
    arch = src.value("general.architecture") if "general.architecture" in fields else None
    if arch and f"{arch}.vocab_size" in fields:
        fields[f"{arch}.vocab_size"] = (UINT32, struct.pack("<I", len(kept_ids)))
    fields["flashtts.reduced_from"] = (STRING, _encode_string(full.name))
    fields["flashtts.reduced_vocab_size"] = (UINT64, struct.pack("<Q", n_vocab))

    lib = _ggml()
    tensors: list[tuple[TensorInfo, int, int]] = []  # (new info, source offset, source bytes)
    offset = 0
    for info in src.tensors:
        size = _nbytes(lib, info.ggml_type, info.shape)
        shape = list(info.shape)
        if info.name in VOCAB_TENSORS:
            if len(shape) != 2 or shape[1] != n_vocab:
                raise GGUFError(f"{full}: {info.name} has shape {shape}, expected [n_embd, {n_vocab}]")
            shape[1] = len(kept_ids)
        new = TensorInfo(info.name, shape, info.ggml_type, offset)
        tensors.append((new, info.offset, size))
        offset = _align(offset + _nbytes(lib, info.ggml_type, shape), src.alignment)

    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, open(full, "rb") as source:
            f.write(MAGIC + struct.pack("<IQQ", 3, len(tensors), len(fields)))
            for key, (vtype, raw) in fields.items():
                f.write(_encode_string(key) + struct.pack("<I", vtype) + raw)
            for new, _, _ in tensors:
                f.write(_encode_string(new.name) + struct.pack("<I", len(new.shape)))
                f.write(struct.pack(f"<{len(new.shape)}QIQ", *new.shape, new.ggml_type, new.offset))
            _pad(f, src.alignment)
            data_start = f.tell()
            for new, old_offset, size in tensors:
                _pad(f, src.alignment, data_start)
                source.seek(src.data_start + old_offset)
                if new.name in VOCAB_TENSORS:
                    row = _nbytes(lib, new.ggml_type, [new.shape[0]])
                    table = np.fromfile(source, dtype=np.uint8, count=size).reshape(n_vocab, row)
                    f.write(np.ascontiguousarray(table[kept_ids]).tobytes())
                else:
                    _copy(source, f, size)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


class EmbeddingRows:
    """Rows of a GGUF's ``token_embd.weight`` as float32, dequantized by ggml's own routine (what
    llama.cpp's ``get_rows`` computes for a token input)."""

    def __init__(self, path: Path):
        gguf = read_gguf(path)
        info = gguf.tensor("token_embd.weight")
        self.n_embd, self.n_vocab = info.shape
        lib = _ggml()
        self._row_bytes = _nbytes(lib, info.ggml_type, [self.n_embd])
        with open(path, "rb") as f:  # the map keeps its own handle
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        start = gguf.data_start + info.offset
        self._table = np.frombuffer(self._map, dtype=np.uint8, count=self._row_bytes * self.n_vocab, offset=start)
        self._table = self._table.reshape(self.n_vocab, self._row_bytes)
        self._type = info.ggml_type
        self._to_float = None if info.ggml_type == GGML_TYPE_F32 else _to_float(lib, info.ggml_type)

    def __call__(self, token_ids: Sequence[int]) -> np.ndarray:
        """A (len(token_ids), n_embd) float32 array."""
        ids = np.asarray(token_ids, dtype=np.int64)
        raw = np.ascontiguousarray(self._table[ids])
        if self._to_float is None:
            return raw.view(np.float32).reshape(len(ids), self.n_embd).copy()
        out = np.empty((len(ids), self.n_embd), dtype=np.float32)
        self._to_float(raw.ctypes.data, out.ctypes.data, out.size)
        return out

    def close(self) -> None:
        self._table = None  # type: ignore[assignment]
        try:
            self._map.close()
        except BufferError:  # a caller still holds a view; the map goes with it
            pass


# -- format helpers ------------------------------------------------------------------------------


def _align(n: int, alignment: int) -> int:
    return n + (-n) % alignment


def _pad(f: BinaryIO, alignment: int, base: int = 0) -> None:
    f.write(b"\0" * ((-(f.tell() - base)) % alignment))


def _copy(source: BinaryIO, dest: BinaryIO, size: int, chunk: int = 1 << 24) -> None:
    while size > 0:
        block = source.read(min(chunk, size))
        if not block:
            raise GGUFError("the GGUF file ends inside a tensor")
        dest.write(block)
        size -= len(block)


def _read_string(buf, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", buf, pos)
    return bytes(buf[pos + 8 : pos + 8 + n]).decode("utf-8", errors="surrogateescape"), pos + 8 + n


def _decode(vtype: int, buf, pos: int, skip: bool = False) -> tuple[Any, int]:
    """(value, position after it); with ``skip``, arrays of numbers are stepped over, not built."""
    if vtype in _SCALAR:
        fmt = _SCALAR[vtype]
        return struct.unpack_from(fmt, buf, pos)[0], pos + struct.calcsize(fmt)
    if vtype == STRING:
        return _read_string(buf, pos)
    if vtype == ARRAY:
        subtype, n = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if subtype in _SCALAR:
            size = struct.calcsize(_SCALAR[subtype])
            if skip:
                return None, pos + n * size
            values = np.frombuffer(bytes(buf[pos : pos + n * size]), dtype=np.dtype(_SCALAR[subtype]))
            return values.tolist(), pos + n * size
        items = []
        for _ in range(n):
            item, pos = _decode(subtype, buf, pos, skip)
            if not skip:
                items.append(item)
        return items, pos
    raise GGUFError(f"unknown GGUF value type {vtype}")


def _scalar(field: tuple[int, bytes]) -> int:
    vtype, raw = field
    if vtype not in _SCALAR:
        raise GGUFError(f"expected a number, found value type {vtype}")
    return struct.unpack_from(_SCALAR[vtype], raw, 0)[0]


def _encode_string(text: str) -> bytes:
    data = text.encode("utf-8", errors="surrogateescape")
    return struct.pack("<Q", len(data)) + data


def _encode_array(subtype: int, values: list) -> bytes:
    head = struct.pack("<IQ", subtype, len(values))
    if subtype == STRING:
        return head + b"".join(_encode_string(v) for v in values)
    if subtype in _SCALAR:
        return head + np.asarray(values, dtype=np.dtype(_SCALAR[subtype])).tobytes()
    raise GGUFError(f"cannot write an array of value type {subtype}")


# -- ggml through llama-cpp-python's library -----------------------------------------------------


class _TypeTraits(ctypes.Structure):
    # struct ggml_type_traits (ggml.h)
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def _ggml():
    from llama_cpp import llama_cpp as lc

    lib = lc._lib  # libllama; ggml's symbols resolve through its dependencies
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    return lib


def _nbytes(lib, ggml_type: int, shape: Sequence[int]) -> int:
    rows = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    return int(lib.ggml_row_size(ggml_type, int(shape[0]))) * rows


def _to_float(lib, ggml_type: int):
    traits = lib.ggml_get_type_traits(ggml_type).contents
    if not traits.to_float:
        raise GGUFError(f"ggml has no float conversion for tensor type {ggml_type}")
    return _TO_FLOAT(traits.to_float)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flashtts" / "gguf-reduced"
