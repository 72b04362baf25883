"""Saved voices ("roles") in a folder or an object store, in safe formats, written atomically.

``RoleStore(location)`` takes a local path (or ``file://`` URL) or any fsspec URL (``s3://bucket/prefix``,
``gs://…``); many processes may share one store. A role's source data is its reference audio, its
optional transcript and its optional latent (MegaTTS3); its version stamp is a hash of those bytes,
kept in ``manifest.json``, which is written last. The engine's tokens computed from the audio are only
a cache, kept with the version they were computed from. No pickles anywhere.

Local layout (``role_dir``; also a shared NFS folder)::

    NAME/
      reference.wav            the reference audio (any *.wav is accepted when a folder is dropped in)
      reference_text.txt       optional transcript
      latent.npy               optional latent, source data (never recomputed)
      manifest.json            name, sample rate, engine, version (a folder dropped in by hand has none:
                               its stamp comes from its files' sizes and times)
      cache/ENGINE/            KEY.npy for each array, source.json: the version they were computed from

A role is written to a temporary folder, fsynced and renamed into place, so a crash never leaves a
half-written role. rename(2) refuses a non-empty target, so of two processes adding one new name
exactly one wins. Object-store layout: see ``ObjectRoleStore``.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import time
import unicodedata
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

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
AUDIO_FILE = "reference.wav"
TEXT_FILE = "reference_text.txt"
MANIFEST = "manifest.json"
CACHE_SOURCE = "source.json"
TMP, TRASH, DATA = ".tmp-", ".trash-", ".data"
# Reads that met a concurrent overwrite are retried this often.
READ_ATTEMPTS = 3
# Object stores: an unreferenced data folder this old (seconds) is an abandoned upload.
STALE_AFTER = 3600.0
_BUCKET_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


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
    version: Optional[str] = None  # the store's stamp of what was read (see RoleStore.version)


def is_store_url(location: object) -> bool:
    """True for an fsspec URL of a remote store (``s3://…``, ``gs://…``); local paths and ``file://`` are not."""
    return isinstance(location, str) and bool(_URL.match(location)) and not location.startswith("file://")


def _content_version(audio: np.ndarray, sample_rate: int, text: Optional[str], latent: Optional[np.ndarray]) -> str:
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


def _files_match(manifest: dict, files: dict[str, bytes]) -> bool:
    """The files read are the ones the manifest was written with (not half of a concurrent overwrite)."""
    listed = manifest["files"]
    try:
        return set(listed) == set(files) and all(
            hashlib.sha256(data).hexdigest() == listed[f].get("sha256") for f, data in files.items()
        )
    except (AttributeError, TypeError):
        return False


def _encode_role(
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


def _manifest(name: str, files: dict[str, bytes], version: str, sample_rate: int, engine: Optional[str]) -> dict:
    return {
        "format": 1,
        "name": name,
        "version": version,
        "sample_rate": sample_rate,
        "engine": engine,
        "created": time.time(),
        "files": {f: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for f, b in sorted(files.items())},
    }


def _decode_role(name: str, files: dict[str, bytes], audio_name: str, version: Optional[str]) -> StoredRole:
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


def _encode_features(engine: str, features: dict[str, np.ndarray], version: str) -> dict[str, bytes]:
    """An engine's cache as files: KEY.npy each, and the source stamp they were computed from."""
    if not _KEY.match(engine):
        raise ValueError(f"bad engine name {engine!r}")
    files = {}
    for key, value in features.items():
        if not _KEY.match(key):
            raise ValueError(f"bad feature key {key!r}")
        arr = np.asarray(value)
        if arr.dtype == object:
            raise ValueError("role features must be numeric arrays")
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        files[f"{key}.npy"] = buf.getvalue()
    files[CACHE_SOURCE] = json.dumps({"version": version, "keys": sorted(features)}).encode()
    return files


def _decode_features(role: str, engine: str, read, version: Optional[str]) -> dict[str, np.ndarray]:
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


_renameat2 = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system or the
    filesystem (NFS) cannot, and the caller falls back to two renames."""
    global _renameat2
    if not sys.platform.startswith("linux"):
        return False
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            _renameat2 = libc.renameat2
            _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        except (OSError, AttributeError):  # glibc before 2.28, musl
            _renameat2 = False
    if not _renameat2:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if _renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT:
        raise FileNotFoundError(err, os.strerror(err), str(b))
    return False


try:
    import fcntl
except ImportError:  # Windows: temporary folders are judged by age instead
    fcntl = None


class RoleStore:
    """Saved roles in a local folder, or (given an fsspec URL) in an object store: ``RoleStore(location)``.

    Many processes may share one store. Every method is blocking I/O: call it off the event loop."""

    def __new__(cls, root: Path | str, *args, **kwargs):
        if cls is RoleStore and is_store_url(root):
            cls = ObjectRoleStore
        return super().__new__(cls)

    def __init__(self, root: Path | str):
        if isinstance(root, str) and root.startswith("file://"):
            root = root[len("file://") :]
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cleanup()

    # -- what is there --------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        return self.root / validate_role_name(name)

    def names(self) -> list[str]:
        if not self.root.is_dir():  # role_dir removed while the server runs: no roles, not a 500
            return []
        out = []
        for p in sorted(self.root.iterdir()):
            if p.is_dir() and not p.name.startswith(".") and self._is_role(p):
                out.append(p.name)
        return out

    def _is_role(self, path: Path) -> bool:
        return (path / MANIFEST).is_file() or self._audio_file(path) is not None

    def exists(self, name: str) -> bool:
        try:
            return self.version(name) is not None
        except InvalidRequest:
            return False

    def version(self, name: str) -> Optional[str]:
        """The role's version stamp, None when there is no such role: one small read, done per request
        so that a cached prepared role is never used after another process changed the role."""
        path = self._dir(name)
        try:
            manifest = json.loads((path / MANIFEST).read_bytes())
            return str(manifest["version"])
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, OSError):
            logger.warning("role %r: unreadable %s; using its files as they are", path.name, MANIFEST)
        return self._files_stamp(path)

    def _files_stamp(self, path: Path) -> Optional[str]:
        """The stamp of a folder without a manifest (dropped in by hand): its source files' sizes and times."""
        audio = self._audio_file(path) if path.is_dir() else None
        if audio is None:
            return None
        h = hashlib.sha256()
        for f in (audio, path / TEXT_FILE, path / LATENT_FILE):
            try:
                st = f.stat()
            except FileNotFoundError:
                continue
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        return "files-" + h.hexdigest()[:26]

    @staticmethod
    def _audio_file(path: Path) -> Optional[Path]:
        ref = path / AUDIO_FILE
        if ref.is_file():
            return ref
        wavs = sorted(path.glob("*.wav"))
        return wavs[0] if wavs else None

    # -- reading --------------------------------------------------------------------------------
    def load(self, name: str, engine: Optional[str] = None) -> StoredRole:
        path = self._dir(name)
        stored = self._read_source(path)
        if engine is not None and _KEY.match(engine):
            cache = path / "cache" / engine
            stored.features = _decode_features(path.name, engine, lambda f: (cache / f).read_bytes(), stored.version)
        return stored

    def _read_source(self, path: Path) -> StoredRole:
        for attempt in range(READ_ATTEMPTS):
            try:
                manifest = json.loads((path / MANIFEST).read_bytes())
                version, listed = str(manifest["version"]), list(manifest["files"])
            except FileNotFoundError:
                manifest = None
            except (ValueError, KeyError, TypeError, OSError):
                manifest = None  # reported by version(); the files are used as they are
            if manifest is None:
                version = self._files_stamp(path)
                if version is None:
                    raise NotFound(f"unknown role {path.name!r}", param="name")
                audio = self._audio_file(path)
                listed = [audio.name] + [f for f in (TEXT_FILE, LATENT_FILE) if (path / f).is_file()]
            try:
                files = {f: (path / f).read_bytes() for f in listed}
            except FileNotFoundError:  # replaced or deleted while we read: read again
                continue
            except IsADirectoryError:
                raise NotFound(f"unknown role {path.name!r}", param="name") from None
            intact = manifest is None or _files_match(manifest, files)
            if not intact and attempt + 1 < READ_ATTEMPTS:
                continue  # files of two versions (an overwrite ran meanwhile): read again
            if not intact:
                logger.warning("role %r: files differ from %s (edited by hand?); using them", path.name, MANIFEST)
            audio_name = AUDIO_FILE if AUDIO_FILE in files else listed[0]
            return _decode_role(path.name, files, audio_name, version)
        raise NotFound(f"unknown role {path.name!r}", param="name")

    # -- writing --------------------------------------------------------------------------------
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

        With ``overwrite=False`` an existing role of that name is a 409, decided by the store itself at
        the moment of the commit, so of two concurrent adds of one name (in any processes) one wins."""
        return self.save_versioned(name, audio, sample_rate, text, features, engine, overwrite, latent)[0]

    def save_versioned(
        self,
        name: str,
        audio: np.ndarray,
        sample_rate: int,
        text: Optional[str] = None,
        features: Optional[dict[str, np.ndarray]] = None,
        engine: Optional[str] = None,
        overwrite: bool = True,
        latent: Optional[np.ndarray] = None,
    ) -> tuple[str, str]:
        """``save``, returning (name, version stamp) of exactly what this call wrote."""
        name = validate_role_name(name)
        audio = np.asarray(audio, dtype=np.float32)
        latent = None if latent is None else np.asarray(latent, dtype=np.float32)
        files = _encode_role(audio, sample_rate, text, latent)
        version = _content_version(audio, sample_rate, text or None, latent)
        manifest = _manifest(name, files, version, sample_rate, engine)
        cache = _encode_features(engine, features, manifest["version"]) if features and engine else None
        self._commit(name, files, manifest, engine, cache, overwrite)
        logger.info("saved role %r in %s", name, self.root)
        return name, manifest["version"]

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        """A temporary folder in the store, held by a lock file so that a process starting meanwhile
        (cleanup) leaves it alone while its writer lives, and removes it once the writer is gone."""
        self.root.mkdir(parents=True, exist_ok=True)  # recreated if it was removed while the server runs
        token = uuid.uuid4().hex
        lock_path, tmp = self.root / f"{TMP}{token}.lock", self.root / f"{TMP}{token}"
        fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            tmp.mkdir()
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                os.unlink(lock_path)
            except FileNotFoundError:
                pass
            os.close(fd)

    def _commit(
        self,
        name: str,
        files: dict[str, bytes],
        manifest: dict,
        engine: Optional[str],
        cache: Optional[dict[str, bytes]],
        overwrite: bool,
    ) -> None:
        with self._scratch() as tmp:
            for fname, data in files.items():
                _fsync_write(tmp / fname, data)
            if cache is not None:
                self._write_folder(tmp / "cache" / engine, cache)
                _fsync_dir(tmp / "cache")
            _fsync_write(tmp / MANIFEST, json.dumps(manifest).encode())  # last: the role is complete
            _fsync_dir(tmp)
            self._place(tmp, self.root / name, overwrite, lambda: self.exists(name))
            _fsync_dir(self.root)

    @staticmethod
    def _write_folder(folder: Path, files: dict[str, bytes]) -> None:
        folder.mkdir(parents=True)
        for fname, data in files.items():
            _fsync_write(folder / fname, data)
        _fsync_dir(folder)

    def _place(self, tmp: Path, target: Path, overwrite: bool, target_is_role) -> None:
        """Rename ``tmp`` to ``target``. rename(2) refuses a non-empty target, locally and on NFS, so
        for a new name that refusal is the claim; an overwrite swaps the two folders in one step where
        the system can, else moves the old one aside first."""
        name = target.name
        for _ in range(100):
            try:
                os.rename(tmp, target)
                return
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            if not overwrite and target_is_role():
                raise Conflict(f"role {name!r} exists already; delete it first or send overwrite=true", param="name")
            try:
                if _exchange(tmp, target):
                    shutil.rmtree(tmp, ignore_errors=True)  # now the old role
                    return
                trash = self.root / f"{TRASH}{uuid.uuid4().hex}"
                os.rename(target, trash)
            except FileNotFoundError:
                continue  # another process moved it meanwhile: try the rename again
            shutil.rmtree(trash, ignore_errors=True)
        raise Conflict(f"role {name!r} is being changed by other requests; try again", param="name")

    def save_features(
        self, name: str, engine: str, features: dict[str, np.ndarray], version: Optional[str] = None
    ) -> None:
        """Cache an engine's tokens/latents for an existing role (e.g. one dropped in by hand).

        ``version``: the role's stamp they were computed from; when the role has changed since, they
        are stale and not written."""
        path = self._dir(name)
        current = self.version(name)
        if current is None:
            raise NotFound(f"unknown role {name!r}", param="name")
        if version is not None and version != current:
            return
        cache = _encode_features(engine, features, current)
        with self._scratch() as tmp:
            folder = tmp / engine
            self._write_folder(folder, cache)
            try:
                (path / "cache").mkdir(exist_ok=True)  # not parents: a role deleted meanwhile stays deleted
            except FileNotFoundError:
                return
            self._place(folder, path / "cache" / engine, True, lambda: True)

    def delete(self, name: str) -> str:
        path = self._dir(name)
        if self.version(name) is None:
            raise NotFound(f"unknown role {name!r}", param="name")
        trash = self.root / f"{TRASH}{uuid.uuid4().hex}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:  # deleted by another request meanwhile
            raise NotFound(f"unknown role {name!r}", param="name") from None
        _fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("deleted role %r", path.name)
        return path.name

    # -- after a crash --------------------------------------------------------------------------
    def cleanup(self, stale_after: float = STALE_AFTER) -> None:
        """Remove what a killed writer left: temporary folders whose lock no live process holds, and
        old roles moved aside. (``stale_after``: the age that counts as abandoned where locks are missing.)"""
        if not self.root.is_dir():
            return
        now = time.time()
        for p in self.root.iterdir():
            if p.name.startswith(TRASH):
                shutil.rmtree(p, ignore_errors=True)
            elif p.name.startswith(TMP) and p.name.endswith(".lock"):
                self._remove_if_unlocked(p, self.root / p.name[: -len(".lock")])
            elif p.name.startswith(TMP) and not (self.root / f"{p.name}.lock").exists():
                # A folder without its lock file: its writer is gone (the lock goes last).
                try:
                    if fcntl is not None or now - p.stat().st_mtime > stale_after:
                        shutil.rmtree(p, ignore_errors=True)
                except FileNotFoundError:
                    pass

    @staticmethod
    def _remove_if_unlocked(lock_path: Path, tmp: Path) -> None:
        try:
            fd = os.open(lock_path, os.O_WRONLY)
        except FileNotFoundError:
            return
        try:
            if fcntl is None:  # no locks here: judged by age
                if time.time() - os.fstat(fd).st_mtime > STALE_AFTER:
                    shutil.rmtree(tmp, ignore_errors=True)
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # its writer is alive
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                os.unlink(lock_path)
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)


class ObjectRoleStore(RoleStore):
    """Roles in an object store through fsspec (``s3://bucket/prefix``, ``gs://…``, ``memory://…``).

    Object stores have no rename, so each write goes to a data folder of its own and the role's
    ``NAME/manifest.json``, naming that folder, is put last: the role exists exactly when its manifest
    does, and a crashed upload is never visible. A new name's manifest is put with ``If-None-Match: *``
    (s3fs ``mode="create"``): S3 refuses the second of two concurrent adds. Stores without
    conditional writes get fsspec's check-then-write, which leaves a short race."""

    def __init__(self, root: str, storage_options: Optional[dict] = None):
        import fsspec

        options = dict(storage_options or {})
        try:  # s3fs and gcsfs cache listings by default; other processes change the store
            self.fs, path = fsspec.core.url_to_fs(root, use_listings_cache=False, **options)
        except TypeError:
            self.fs, path = fsspec.core.url_to_fs(root, **options)
        self.root = root
        self._base = path.rstrip("/")
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
        if protocols & _BUCKET_STORES:  # a missing bucket fails at startup, not as a 500 on the first add
            bucket = self._base.split("/", 1)[0]
            try:
                self.fs.ls(bucket)
            except (FileNotFoundError, PermissionError) as exc:
                raise InvalidRequest(f"--role_dir {root}: bucket {bucket!r} cannot be listed ({exc})") from None
        self.cleanup()

    def _path(self, *parts: str) -> str:
        return "/".join((self._base, *parts))

    def _manifest_of(self, name: str) -> Optional[dict]:
        try:
            data = self.fs.cat_file(self._path(name, MANIFEST))
        except FileNotFoundError:
            return None
        try:
            manifest = json.loads(data)
            str(manifest["version"]), str(manifest["data"]), list(manifest["files"])
            return manifest
        except (ValueError, KeyError, TypeError):
            logger.warning("role %r: unreadable %s in %s; ignoring the role", name, MANIFEST, self.root)
            return None

    def names(self) -> list[str]:
        # One listing: NAME/ holds nothing but the manifest, so a NAME/ prefix is a complete role.
        self.fs.invalidate_cache()
        try:
            entries = self.fs.ls(self._base, detail=True)
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            base = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") != "directory" or base.startswith("."):
                continue
            try:
                out.append(validate_role_name(base))
            except InvalidRequest:
                continue
        return sorted(set(out))

    def version(self, name: str) -> Optional[str]:
        manifest = self._manifest_of(validate_role_name(name))
        return None if manifest is None else str(manifest["version"])

    def load(self, name: str, engine: Optional[str] = None) -> StoredRole:
        name = validate_role_name(name)
        for _ in range(READ_ATTEMPTS):
            manifest = self._manifest_of(name)
            if manifest is None:
                break
            data = self._path(DATA, name, manifest["data"])
            try:
                got = self.fs.cat([f"{data}/{f}" for f in manifest["files"]], on_error="raise")
            except FileNotFoundError:  # replaced or deleted while we read: read the new manifest
                continue
            files = {p.rsplit("/", 1)[-1]: b for p, b in got.items()}
            stored = _decode_role(name, files, AUDIO_FILE, str(manifest["version"]))
            if engine is not None and _KEY.match(engine):
                cache = f"{data}/cache/{engine}"
                stored.features = _decode_features(
                    name, engine, lambda f, cache=cache: self.fs.cat_file(f"{cache}/{f}"), stored.version
                )
            return stored
        raise NotFound(f"unknown role {name!r}", param="name")

    def _commit(
        self,
        name: str,
        files: dict[str, bytes],
        manifest: dict,
        engine: Optional[str],
        cache: Optional[dict[str, bytes]],
        overwrite: bool,
    ) -> None:
        previous = self._manifest_of(name)
        if previous is not None and not overwrite:
            raise Conflict(f"role {name!r} exists already; delete it first or send overwrite=true", param="name")
        # The data folder's name starts with its creation time, so cleanup can tell an abandoned
        # upload from one still running in another process.
        manifest["data"] = f"{time.time_ns():016x}-{uuid.uuid4().hex[:8]}"
        data = self._path(DATA, name, manifest["data"])
        uploads = {f"{data}/{f}": b for f, b in files.items()}
        if cache is not None:
            uploads.update({f"{data}/cache/{engine}/{f}": b for f, b in cache.items() if f != CACHE_SOURCE})
        try:
            self.fs.pipe(uploads)
            if cache is not None:
                self.fs.pipe_file(f"{data}/cache/{engine}/{CACHE_SOURCE}", cache[CACHE_SOURCE])
            body = json.dumps(manifest).encode()
            try:
                self.fs.pipe_file(self._path(name, MANIFEST), body, mode="overwrite" if overwrite else "create")
            except FileExistsError:
                raise Conflict(
                    f"role {name!r} exists already; delete it first or send overwrite=true", param="name"
                ) from None
        except BaseException:
            self._remove(data)
            raise
        if previous is not None and previous["data"] != manifest["data"]:
            self._remove(self._path(DATA, name, previous["data"]))

    def _remove(self, path: str) -> None:
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        except Exception as exc:  # left for cleanup; the write itself is done (or failed) already
            logger.warning("could not remove %s: %s", path, exc)

    def save_features(
        self, name: str, engine: str, features: dict[str, np.ndarray], version: Optional[str] = None
    ) -> None:
        name = validate_role_name(name)
        manifest = self._manifest_of(name)
        if manifest is None:
            raise NotFound(f"unknown role {name!r}", param="name")
        if version is not None and version != manifest["version"]:
            return
        cache = _encode_features(engine, features, str(manifest["version"]))
        folder = self._path(DATA, name, manifest["data"], "cache", engine)
        self.fs.pipe({f"{folder}/{f}": b for f, b in cache.items() if f != CACHE_SOURCE})
        self.fs.pipe_file(f"{folder}/{CACHE_SOURCE}", cache[CACHE_SOURCE])  # last: the set is complete

    def delete(self, name: str) -> str:
        name = validate_role_name(name)
        manifest = self._manifest_of(name)
        if manifest is None:
            raise NotFound(f"unknown role {name!r}", param="name")
        try:
            self.fs.rm_file(self._path(name, MANIFEST))  # the role is gone from here on
        except FileNotFoundError:
            raise NotFound(f"unknown role {name!r}", param="name") from None
        self._remove(self._path(DATA, name, manifest["data"]))
        logger.info("deleted role %r", name)
        return name

    def cleanup(self, stale_after: float = STALE_AFTER) -> None:
        """Remove data folders no manifest names that are older than ``stale_after`` seconds (uploads
        of killed writers, or of overwrites that lost the race); younger ones may still be uploading."""
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(self._path(DATA))
        except FileNotFoundError:
            return
        folders: dict[str, set[str]] = {}
        prefix = self._path(DATA) + "/"
        for key in found:
            parts = key[len(prefix) :].split("/") if key.startswith(prefix) else []
            if len(parts) >= 3:
                folders.setdefault(parts[0], set()).add(parts[1])
        now = time.time_ns()
        for name, ids in folders.items():
            try:
                manifest = self._manifest_of(validate_role_name(name))
            except InvalidRequest:
                continue
            live = manifest["data"] if manifest is not None else None
            for data_id in ids:
                try:
                    age = (now - int(data_id.split("-", 1)[0], 16)) / 1e9
                except ValueError:
                    continue
                if data_id != live and age > stale_after:
                    self._remove(self._path(DATA, name, data_id))
