"""A role as files: its source data (reference audio, transcript, latent), the manifest that stamps
their version, and an engine's cache of arrays computed from them. Safe formats only: WAV, UTF-8 text,
JSON and ``.npy`` read with ``allow_pickle=False``."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import AudioDecodeError, InvalidRequest

logger = logging.getLogger("flashtts.roles")

LATENT_FILE = "latent.npy"
AUDIO_FILE = "reference.wav"
TEXT_FILE = "reference_text.txt"
MANIFEST = "manifest.json"
CACHE_SOURCE = "source.json"
_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


@dataclass
class StoredRole:
    name: str
    audio: np.ndarray
    sample_rate: int
    text: Optional[str]
    features: dict[str, np.ndarray] = field(default_factory=dict)
    latent: Optional[np.ndarray] = None  # latent.npy: source data sent with the audio (MegaTTS3)
    version: Optional[str] = None  # the store's stamp of what was read (see RoleStore.version)


@dataclass
class EncodedRole:
    """A role as a store writes it: its source files, their manifest, and one engine's cache files."""

    name: str
    files: dict[str, bytes]
    manifest: dict
    engine: Optional[str] = None
    cache: Optional[dict[str, bytes]] = None


def is_cache_key(name: str) -> bool:
    """An engine name or feature key usable as a file name in the cache."""
    return bool(_KEY.match(name))


def content_version(audio: np.ndarray, sample_rate: int, text: Optional[str], latent: Optional[np.ndarray]) -> str:
    """The version stamp of a role: a hash of its samples, rate, transcript and latent (not of the WAV
    bytes: libsndfile puts a timestamp in float WAV files)."""
    h = hashlib.sha256()
    h.update(f"{int(sample_rate)}\0".encode())
    h.update(np.ascontiguousarray(audio, dtype="<f4").tobytes())
    h.update(b"\0text\0" + (text or "").encode("utf-8"))
    if latent is not None:
        arr = np.ascontiguousarray(latent, dtype="<f4")
        h.update(b"\0latent\0" + repr(arr.shape).encode() + arr.tobytes())
    return h.hexdigest()[:32]


def files_match(manifest: dict, files: dict[str, bytes]) -> bool:
    """The files read are the ones the manifest was written with (not half of a concurrent overwrite)."""
    listed = manifest["files"]
    try:
        return set(listed) == set(files) and all(
            hashlib.sha256(data).hexdigest() == listed[f].get("sha256") for f, data in files.items()
        )
    except (AttributeError, TypeError):
        return False


def encode_role(
    audio: np.ndarray, sample_rate: int, text: Optional[str], latent: Optional[np.ndarray]
) -> dict[str, bytes]:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32), sample_rate, format="WAV", subtype="FLOAT")
    files = {AUDIO_FILE: buf.getvalue()}
    if text:
        files[TEXT_FILE] = text.encode("utf-8")
    if latent is not None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(latent, dtype=np.float32), allow_pickle=False)
        files[LATENT_FILE] = buf.getvalue()
    return files


def role_manifest(name: str, files: dict[str, bytes], version: str, sample_rate: int, engine: Optional[str]) -> dict:
    return {
        "format": 1,
        "name": name,
        "version": version,
        "sample_rate": sample_rate,
        "engine": engine,
        "created": time.time(),
        "files": {f: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for f, b in sorted(files.items())},
    }


def decode_role(name: str, files: dict[str, bytes], audio_name: str, version: Optional[str]) -> StoredRole:
    import soundfile as sf

    try:
        audio, sr = sf.read(io.BytesIO(files[audio_name]), dtype="float32", always_2d=True)
    except (RuntimeError, OSError):  # soundfile's LibsndfileError is a RuntimeError
        raise AudioDecodeError(f"{audio_name} is not a readable WAV file", param="name") from None
    text = files[TEXT_FILE].decode("utf-8", errors="replace").strip() if TEXT_FILE in files else None
    latent = None
    if LATENT_FILE in files:
        try:
            latent = np.load(io.BytesIO(files[LATENT_FILE]), allow_pickle=False)
        except (ValueError, OSError, EOFError):
            # Unlike the cache this cannot be recomputed: the role is unusable, and says so.
            raise InvalidRequest(f"saved role {name!r} has an unreadable {LATENT_FILE}", param="name") from None
    return StoredRole(
        name=name,
        audio=np.ascontiguousarray(audio[:, 0]),
        sample_rate=int(sr),
        text=text or None,
        latent=latent,
        version=version,
    )


def encode_features(engine: str, features: dict[str, np.ndarray], version: str) -> dict[str, bytes]:
    """An engine's cache as files: KEY.npy each, and the source stamp they were computed from."""
    if not is_cache_key(engine):
        raise ValueError(f"bad engine name {engine!r}")
    files = {}
    for key, value in features.items():
        if not is_cache_key(key):
            raise ValueError(f"bad feature key {key!r}")
        arr = np.asarray(value)
        if arr.dtype == object:
            raise ValueError("role features must be numeric arrays")
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        files[f"{key}.npy"] = buf.getvalue()
    files[CACHE_SOURCE] = json.dumps({"version": version, "keys": sorted(features)}).encode()
    return files


def decode_features(
    role: str, engine: str, read: Callable[[str], bytes], version: Optional[str]
) -> dict[str, np.ndarray]:
    """The cache of ``engine`` if it was computed from this version of the role; else {} (recomputed).

    ``read(file_name)`` returns a cache file's bytes (FileNotFoundError when absent)."""
    try:
        source = json.loads(read(CACHE_SOURCE))
        if source.get("version") != version:
            return {}  # computed from another version of the role (or by an older release)
        return {key: np.load(io.BytesIO(read(f"{key}.npy")), allow_pickle=False) for key in source["keys"]}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError, OSError, EOFError) as exc:
        # A damaged cache is recomputed from the audio (all of it: a partial set is no use).
        logger.warning("role %r: unreadable %s cache (%s); recomputing", role, engine, exc)
        return {}
