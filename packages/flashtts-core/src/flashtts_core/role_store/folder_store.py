"""Roles in a local folder (also a shared NFS folder), each written atomically.

Layout::

    NAME/
      reference.wav            the reference audio (any *.wav is accepted when a folder is dropped in)
      reference_text.txt       optional transcript
      latent.npy               optional latent, source data (never recomputed)
      manifest.json            name, sample rate, engine, version (a folder dropped in by hand has none:
                               its stamp comes from its files' sizes and times)
      cache/ENGINE/            KEY.npy for each array, source.json: the version they were computed from

A role is written to a temporary folder, fsynced and renamed into place (``atomic``), so a crash
never leaves a half-written role, and of two processes adding one new name exactly one wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import Conflict, NotFound
from .atomic import (
    fsync_dir,
    fsync_write,
    locked_scratch,
    move_aside,
    remove_leftovers,
    rename_into_place,
    write_folder,
)
from .encoding import (
    AUDIO_FILE,
    LATENT_FILE,
    MANIFEST,
    TEXT_FILE,
    EncodedRole,
    StoredRole,
    decode_features,
    decode_role,
    encode_features,
    files_match,
    is_cache_key,
)
from .names import validate_role_name
from .store import READ_ATTEMPTS, STALE_AFTER, RoleStore, exists_already

logger = logging.getLogger("flashtts.roles")


class FolderRoleStore(RoleStore):
    """Saved roles in a local folder (a path, or a ``file://`` URL)."""

    root: Path

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

    def version(self, name: str) -> Optional[str]:
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
        if engine is not None and is_cache_key(engine):
            cache = path / "cache" / engine
            stored.features = decode_features(path.name, engine, lambda f: (cache / f).read_bytes(), stored.version)
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
                stamp, audio = self._files_stamp(path), self._audio_file(path)
                if stamp is None or audio is None:  # also when removed meanwhile
                    raise NotFound(f"unknown role {path.name!r}", param="name")
                version = stamp
                listed = [audio.name] + [f for f in (TEXT_FILE, LATENT_FILE) if (path / f).is_file()]
            try:
                files = {f: (path / f).read_bytes() for f in listed}
            except FileNotFoundError:  # replaced or deleted while we read: read again
                continue
            except IsADirectoryError:
                raise NotFound(f"unknown role {path.name!r}", param="name") from None
            intact = manifest is None or files_match(manifest, files)
            if not intact and attempt + 1 < READ_ATTEMPTS:
                continue  # files of two versions (an overwrite ran meanwhile): read again
            if not intact:
                logger.warning("role %r: files differ from %s (edited by hand?); using them", path.name, MANIFEST)
            audio_name = AUDIO_FILE if AUDIO_FILE in files else listed[0]
            return decode_role(path.name, files, audio_name, version)
        raise NotFound(f"unknown role {path.name!r}", param="name")

    # -- writing --------------------------------------------------------------------------------
    def _commit(self, role: EncodedRole, overwrite: bool) -> None:
        name, files, manifest, engine, cache = role.name, role.files, role.manifest, role.engine, role.cache
        with locked_scratch(self.root) as tmp:
            for fname, data in files.items():
                fsync_write(tmp / fname, data)
            if cache is not None and engine is not None:  # a cache comes with its engine's name
                write_folder(tmp / "cache" / engine, cache)
                fsync_dir(tmp / "cache")
            fsync_write(tmp / MANIFEST, json.dumps(manifest).encode())  # last: the role is complete
            fsync_dir(tmp)
            self._place(tmp, self.root / name, lambda: overwrite or not self.exists(name))
            fsync_dir(self.root)

    def _place(self, tmp: Path, target: Path, may_replace) -> None:
        try:
            placed = rename_into_place(tmp, target, self.root, may_replace)
        except FileExistsError:
            raise exists_already(target.name) from None
        if not placed:
            raise Conflict(f"role {target.name!r} is being changed by other requests; try again", param="name")

    def save_features(
        self, name: str, engine: str, features: dict[str, np.ndarray], version: Optional[str] = None
    ) -> None:
        path = self._dir(name)
        current = self.version(name)
        if current is None:
            raise NotFound(f"unknown role {name!r}", param="name")
        if version is not None and version != current:
            return
        cache = encode_features(engine, features, current)
        with locked_scratch(self.root) as tmp:
            folder = tmp / engine
            write_folder(folder, cache)
            try:
                (path / "cache").mkdir(exist_ok=True)  # not parents: a role deleted meanwhile stays deleted
            except FileNotFoundError:
                return
            self._place(folder, path / "cache" / engine, lambda: True)

    def delete(self, name: str) -> str:
        path = self._dir(name)
        if self.version(name) is None:
            raise NotFound(f"unknown role {name!r}", param="name")
        try:
            move_aside(path, self.root)
        except FileNotFoundError:  # deleted by another request meanwhile
            raise NotFound(f"unknown role {name!r}", param="name") from None
        logger.info("deleted role %r", path.name)
        return path.name

    # -- after a crash --------------------------------------------------------------------------
    def cleanup(self, stale_after: float = STALE_AFTER) -> None:
        """Remove what a killed writer left: temporary folders whose lock no live process holds, and
        old roles moved aside. (``stale_after``: the age that counts as abandoned where locks are missing.)"""
        remove_leftovers(self.root, stale_after)
