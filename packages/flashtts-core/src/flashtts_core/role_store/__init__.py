"""Saved voices ("roles") in a folder or an object store, in safe formats, written atomically.

``open_role_store(location)`` takes a local path (or ``file://`` URL: a ``FolderRoleStore``) or any
fsspec URL (``s3://bucket/prefix``, ``gs://…``: an ``ObjectRoleStore``); many processes may share one
store. A role's source data is its reference audio, its optional transcript and its optional latent
(MegaTTS3); its version stamp is a hash of those bytes, kept in ``manifest.json``, which is written
last. The engine's tokens computed from the audio are only a cache, kept with the version they were
computed from. No pickles anywhere.

Modules: ``store`` (the ``RoleStore`` interface), ``names`` (what a role may be called), ``encoding``
(a role as files), ``folder_store`` and ``atomic`` (its atomic folder writes), ``object_store``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from .encoding import StoredRole
from .folder_store import FolderRoleStore
from .names import validate_role_name
from .object_store import ObjectRoleStore
from .store import RoleStore

__all__ = [
    "FolderRoleStore",
    "ObjectRoleStore",
    "RoleStore",
    "StoredRole",
    "is_store_url",
    "open_role_store",
    "validate_role_name",
]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_store_url(location: object) -> bool:
    """True for an fsspec URL of a remote store (``s3://…``, ``gs://…``); local paths and ``file://`` are not."""
    return isinstance(location, str) and bool(_URL.match(location)) and not location.startswith("file://")


def open_role_store(location: Path | str, storage_options: Optional[dict] = None) -> RoleStore:
    """The store at ``location``: an object store for an fsspec URL (``storage_options`` go to fsspec),
    else a local folder (created if missing). Either cleans up what killed writers left."""
    if is_store_url(location):
        return ObjectRoleStore(str(location), storage_options)
    return FolderRoleStore(location)
