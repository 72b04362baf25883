"""The ``RoleStore`` interface: what the server asks of a store of saved roles, whatever holds them."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import Conflict, InvalidRequest
from .encoding import EncodedRole, StoredRole, content_version, encode_features, encode_role, role_manifest
from .names import validate_role_name

logger = logging.getLogger("flashtts.roles")

# Reads that met a concurrent overwrite are retried this often.
READ_ATTEMPTS = 3
# What a writer left this long ago (seconds) without finishing is abandoned.
STALE_AFTER = 3600.0


def exists_already(name: str) -> Conflict:
    """The 409 of an add without overwrite whose name is taken."""
    return Conflict(f"role {name!r} exists already; delete it first or send overwrite=true", param="name")


class RoleStore(ABC):
    """Saved roles, shared by many processes. Open one with ``open_role_store(location)``.

    Every method is blocking I/O: call it off the event loop. A store implements reading, deleting
    and cleaning up, and ``_commit``, which makes one encoded role visible in a single step."""

    root: Path | str

    @abstractmethod
    def names(self) -> list[str]:
        """Every complete role, sorted."""

    @abstractmethod
    def version(self, name: str) -> Optional[str]:
        """The role's version stamp, None when there is no such role: one small read, done per request
        so that a cached prepared role is never used after another process changed the role."""

    @abstractmethod
    def load(self, name: str, engine: Optional[str] = None) -> StoredRole:
        """The role's source data, with ``engine``'s cache when it was computed from this version."""

    @abstractmethod
    def save_features(
        self, name: str, engine: str, features: dict[str, np.ndarray], version: Optional[str] = None
    ) -> None:
        """Cache an engine's tokens/latents for an existing role (e.g. one dropped in by hand).

        ``version``: the role's stamp they were computed from; when the role has changed since, they
        are stale and not written."""

    @abstractmethod
    def delete(self, name: str) -> str:
        """Remove the role; its validated name (NotFound when there is none)."""

    @abstractmethod
    def cleanup(self, stale_after: float = STALE_AFTER) -> None:
        """Remove what killed writers left (``stale_after``: the age that counts as abandoned)."""

    @abstractmethod
    def _commit(self, role: EncodedRole, overwrite: bool) -> None:
        """Make ``role`` (its files, manifest and cache) visible in one step;
        Conflict when ``overwrite`` is false and the name is taken at that moment."""

    def exists(self, name: str) -> bool:
        try:
            return self.version(name) is not None
        except InvalidRequest:
            return False

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
        files = encode_role(audio, sample_rate, text, latent)
        version = content_version(audio, sample_rate, text or None, latent)
        manifest = role_manifest(name, files, version, sample_rate, engine)
        cache = encode_features(engine, features, manifest["version"]) if features and engine else None
        self._commit(EncodedRole(name, files, manifest, engine, cache), overwrite)
        logger.info("saved role %r in %s", name, self.root)
        return name, manifest["version"]
