"""Saved voices ("roles") on disk, in safe formats, written atomically.

Layout of ``role_dir``::

    NAME/
      reference.wav            the reference audio (any *.wav is accepted when a folder is dropped in)
      reference_text.txt       optional transcript
      cache/ENGINE/KEY.npy     the engine's tokens or latents, computed once (numpy, no pickles)
      role.json                metadata

A role is written to a temporary folder, fsynced and renamed into place, so a crash never leaves a
half-written role.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import AudioDecodeError, Conflict, InvalidRequest, NotFound

logger = logging.getLogger("flashtts.roles")

MAX_NAME_LENGTH = 64
# Most filesystems cap one path component at 255 bytes: 64 four-byte characters would pass the
# length check and then fail in the filesystem.
MAX_NAME_BYTES = 255
_NAME = re.compile(r"^[^\W][\w\-. ]*$", re.UNICODE)
# Device names Windows refuses as file names, with or without an extension ("con", "nul.txt").
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


LATENT_FILE = "latent.npy"


def validate_role_name(name: str) -> str:
    """A role name: letters, digits, ``_ - . space``; no separators, no leading dot, ≤ 64 chars.

    Names are compared in Unicode NFC, so "Å" typed as one code point or as A + ring is one role."""
    if not isinstance(name, str):
        raise InvalidRequest("role name must be a string", param="name")
    name = unicodedata.normalize("NFC", name.strip())
    if not name:
        raise InvalidRequest("role name must not be empty", param="name")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"role name is longer than {MAX_NAME_LENGTH} characters", param="name")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidRequest(f"role name is longer than {MAX_NAME_BYTES} bytes in UTF-8", param="name")
    # Combining marks (Devanagari and Thai vowel signs, Arabic harakat …) are part of the letter before them.
    letters = "".join(ch for ch in name if not unicodedata.category(ch).startswith("M"))
    if ".." in name or not letters.startswith(name[0]) or not _NAME.match(letters) or name.endswith((".", " ")):
        raise InvalidRequest(
            f"invalid role name {name!r}: use letters, digits, '_', '-', '.', spaces; no path characters",
            param="name",
        )
    if _RESERVED.match(name):
        raise InvalidRequest(f"invalid role name {name!r}: it is a reserved device name on Windows", param="name")
    return name


@dataclass
class StoredRole:
    name: str
    audio: np.ndarray
    sample_rate: int
    text: Optional[str]
    features: dict[str, np.ndarray] = field(default_factory=dict)
    latent: Optional[np.ndarray] = None  # latent.npy: source data sent with the audio (MegaTTS3)


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RoleStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cleanup()

    def _cleanup(self) -> None:
        for p in self.root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".trash-*"):
            shutil.rmtree(p, ignore_errors=True)

    def _dir(self, name: str) -> Path:
        return self.root / validate_role_name(name)

    def names(self) -> list[str]:
        if not self.root.is_dir():  # role_dir removed while the server runs: no roles, not a 500
            return []
        out = []
        for p in sorted(self.root.iterdir()):
            if p.is_dir() and not p.name.startswith(".") and self._audio_file(p) is not None:
                out.append(p.name)
        return out

    def exists(self, name: str) -> bool:
        try:
            path = self._dir(name)
        except InvalidRequest:
            return False
        return path.is_dir() and self._audio_file(path) is not None

    @staticmethod
    def _audio_file(path: Path) -> Optional[Path]:
        ref = path / "reference.wav"
        if ref.is_file():
            return ref
        wavs = sorted(path.glob("*.wav"))
        return wavs[0] if wavs else None

    def load(self, name: str, engine: Optional[str] = None) -> StoredRole:
        import soundfile as sf

        path = self._dir(name)
        audio_file = self._audio_file(path) if path.is_dir() else None
        if audio_file is None:
            raise NotFound(f"unknown role {name!r}", param="name")
        try:
            audio, sr = sf.read(audio_file, dtype="float32", always_2d=True)
        except (RuntimeError, OSError):  # soundfile's LibsndfileError is a RuntimeError
            raise AudioDecodeError(f"{audio_file.name} is not a readable WAV file", param="name") from None
        text_file = path / "reference_text.txt"
        text = text_file.read_text(encoding="utf-8", errors="replace").strip() if text_file.is_file() else None
        features: dict[str, np.ndarray] = {}
        if engine is not None:
            cache = path / "cache" / engine
            if cache.is_dir():
                for f in sorted(cache.glob("*.npy")):
                    try:
                        features[f.stem] = np.load(f, allow_pickle=False)
                    except (ValueError, OSError, EOFError) as exc:
                        # A damaged cache is recomputed from the audio (all of it: a partial set is no use).
                        logger.warning("role %r: unreadable cache file %s (%s); recomputing", path.name, f.name, exc)
                        features = {}
                        break
        latent = None
        latent_file = path / LATENT_FILE
        if latent_file.is_file():
            try:
                latent = np.load(latent_file, allow_pickle=False)
            except (ValueError, OSError, EOFError):
                # Unlike the cache this cannot be recomputed: the role is unusable, and says so.
                raise InvalidRequest(
                    f"saved role {path.name!r} has an unreadable {LATENT_FILE}", param="name"
                ) from None
        return StoredRole(
            name=path.name,
            audio=np.ascontiguousarray(audio[:, 0]),
            sample_rate=int(sr),
            text=text or None,
            features=features,
            latent=latent,
        )

    def save(
        self,
        name: str,
        audio: np.ndarray,
        sample_rate: int,
        text: Optional[str] = None,
        features: Optional[dict[str, np.ndarray]] = None,
        engine: Optional[str] = None,
        overwrite: bool = True,
        latent: Optional[np.ndarray] = None,
    ) -> str:
        """Write (or replace) a role atomically; returns its validated name.

        With ``overwrite=False`` an existing role of that name is a 409, checked at the moment of the
        rename, so of two concurrent adds of one name exactly one wins."""
        import soundfile as sf

        name = validate_role_name(name)
        self.root.mkdir(parents=True, exist_ok=True)  # recreated if it was removed while the server runs
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            import io

            buf = io.BytesIO()
            sf.write(buf, np.asarray(audio, dtype=np.float32), sample_rate, format="WAV", subtype="FLOAT")
            _fsync_write(tmp / "reference.wav", buf.getvalue())
            if text:
                _fsync_write(tmp / "reference_text.txt", text.encode("utf-8"))
            if latent is not None:
                buf = io.BytesIO()
                np.save(buf, np.asarray(latent, dtype=np.float32), allow_pickle=False)
                _fsync_write(tmp / LATENT_FILE, buf.getvalue())
            if features and engine:
                self._write_features(tmp, engine, features)
            meta = {"name": name, "sample_rate": sample_rate, "created": time.time(), "engine": engine}
            _fsync_write(tmp / "role.json", json.dumps(meta).encode())
            _fsync_dir(tmp)
            with self._lock:
                target = self.root / name
                trash = None
                if target.exists():
                    if not overwrite:
                        raise Conflict(
                            f"role {name!r} exists already; delete it first or send overwrite=true", param="name"
                        )
                    trash = self.root / f".trash-{uuid.uuid4().hex}"
                    os.rename(target, trash)
                os.rename(tmp, target)
                _fsync_dir(self.root)
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("saved role %r in %s", name, self.root)
        return name

    def _write_features(self, role_path: Path, engine: str, features: dict[str, np.ndarray]) -> None:
        if not _KEY.match(engine):
            raise ValueError(f"bad engine name {engine!r}")
        cache = role_path / "cache" / engine
        cache.mkdir(parents=True, exist_ok=True)
        for key, value in features.items():
            if not _KEY.match(key):
                raise ValueError(f"bad feature key {key!r}")
            arr = np.asarray(value)
            if arr.dtype == object:
                raise ValueError("role features must be numeric arrays")
            tmp = cache / f".{key}.{uuid.uuid4().hex}.npy"
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, cache / f"{key}.npy")

    def save_features(self, name: str, engine: str, features: dict[str, np.ndarray]) -> None:
        """Cache an engine's tokens/latents for an existing role (e.g. one dropped in by hand)."""
        path = self._dir(name)
        if not path.is_dir():
            raise NotFound(f"unknown role {name!r}", param="name")
        self._write_features(path, engine, features)

    def delete(self, name: str) -> str:
        path = self._dir(name)
        with self._lock:
            if not path.is_dir():
                raise NotFound(f"unknown role {name!r}", param="name")
            trash = self.root / f".trash-{uuid.uuid4().hex}"
            os.rename(path, trash)
            _fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("deleted role %r", path.name)
        return path.name
