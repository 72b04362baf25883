"""Roles in an object store through fsspec (``s3://bucket/prefix``, ``gs://…``, ``memory://…``).

Object stores have no rename, so each write goes to a data folder of its own and the role's
``NAME/manifest.json``, naming that folder, is put last: the role exists exactly when its manifest
does, and a crashed upload is never visible. A new name's manifest is put with ``If-None-Match: *``
(s3fs ``mode="create"``): S3 refuses the second of two concurrent adds. Stores without conditional
writes get fsspec's check-then-write, which leaves a short race.

Layout::

    NAME/manifest.json                     as in a folder store, plus "data": the data folder's id
    .data/NAME/ID/                         reference.wav, reference_text.txt, latent.npy
    .data/NAME/ID/cache/ENGINE/            KEY.npy, source.json (put last)
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Optional

import numpy as np

from ..errors import InvalidRequest, NotFound
from .encoding import (
    AUDIO_FILE,
    CACHE_SOURCE,
    MANIFEST,
    EncodedRole,
    StoredRole,
    decode_features,
    decode_role,
    encode_features,
    is_cache_key,
)
from .names import validate_role_name
from .store import READ_ATTEMPTS, STALE_AFTER, RoleStore, exists_already

logger = logging.getLogger("flashtts.roles")

DATA = ".data"
_BUCKET_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


class ObjectRoleStore(RoleStore):
    """Saved roles under an fsspec URL; ``storage_options`` go to fsspec."""

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
            stored = decode_role(name, files, AUDIO_FILE, str(manifest["version"]))
            if engine is not None and is_cache_key(engine):
                cache = f"{data}/cache/{engine}"

                def read(f: str, cache: str = cache) -> bytes:
                    return self.fs.cat_file(f"{cache}/{f}")

                stored.features = decode_features(name, engine, read, stored.version)
            return stored
        raise NotFound(f"unknown role {name!r}", param="name")

    def _commit(self, role: EncodedRole, overwrite: bool) -> None:
        name, files, manifest, engine, cache = role.name, role.files, role.manifest, role.engine, role.cache
        previous = self._manifest_of(name)
        if previous is not None and not overwrite:
            raise exists_already(name)
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
                raise exists_already(name) from None
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
        cache = encode_features(engine, features, str(manifest["version"]))
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
