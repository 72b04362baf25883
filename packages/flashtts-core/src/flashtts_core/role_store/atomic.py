"""Atomic folder writes on a local or NFS filesystem: write into a locked temporary folder, fsync, and
rename it into place. rename(2) refuses a non-empty target, so of two processes placing one new
folder exactly one wins; a replacement swaps the two folders in one step where the system can.
What a killed writer leaves behind (temporary folders, folders moved aside) is removed later by
``remove_leftovers``."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows: temporary folders are judged by age instead
    fcntl = None  # type: ignore[assignment]  # the module or None, tested before each use

TMP, TRASH = ".tmp-", ".trash-"
# How often a rename is tried again while other writers keep replacing its target.
PLACE_ATTEMPTS = 100


def fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
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


def write_folder(folder: Path, files: dict[str, bytes]) -> None:
    """A new folder holding ``files`` (name -> bytes), each fsynced, then the folder."""
    folder.mkdir(parents=True)
    for fname, data in files.items():
        fsync_write(folder / fname, data)
    fsync_dir(folder)


# libc's renameat2 (a ctypes function) once looked up; False where there is none.
_renameat2: Any = None


def exchange(a: Path, b: Path) -> bool:
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


@contextmanager
def locked_scratch(root: Path) -> Iterator[Path]:
    """A temporary folder in ``root``, held by a lock file so that a process starting meanwhile
    (``remove_leftovers``) leaves it alone while its writer lives, and removes it once the writer is gone."""
    root.mkdir(parents=True, exist_ok=True)  # recreated if it was removed while the server runs
    token = uuid.uuid4().hex
    lock_path, tmp = root / f"{TMP}{token}.lock", root / f"{TMP}{token}"
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


def rename_into_place(tmp: Path, target: Path, trash_dir: Path, may_replace: Callable[[], bool]) -> bool:
    """Rename ``tmp`` to ``target``. For a new target the rename's refusal of a non-empty target is the
    claim; when ``target`` exists and ``may_replace()`` says yes, the two folders are swapped in one step
    where the system can, else the old one is moved aside into ``trash_dir`` first.

    Raises FileExistsError when ``may_replace()`` says no; False when other writers kept changing
    ``target`` for ``PLACE_ATTEMPTS`` tries."""
    for _ in range(PLACE_ATTEMPTS):
        try:
            os.rename(tmp, target)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        if not may_replace():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
        try:
            if exchange(tmp, target):
                shutil.rmtree(tmp, ignore_errors=True)  # now the old folder
                return True
            trash = trash_dir / f"{TRASH}{uuid.uuid4().hex}"
            os.rename(target, trash)
        except FileNotFoundError:
            continue  # another process moved it meanwhile: try the rename again
        shutil.rmtree(trash, ignore_errors=True)
    return False


def move_aside(path: Path, trash_dir: Path) -> None:
    """Take ``path`` away in one rename, then remove it (FileNotFoundError when it is gone already)."""
    trash = trash_dir / f"{TRASH}{uuid.uuid4().hex}"
    os.rename(path, trash)
    fsync_dir(trash_dir)
    shutil.rmtree(trash, ignore_errors=True)


def remove_leftovers(root: Path, stale_after: float) -> None:
    """Remove what killed writers left in ``root``: temporary folders whose lock no live process
    holds, and folders moved aside. (``stale_after``: the age in seconds that counts as abandoned
    where there are no locks.)"""
    if not root.is_dir():
        return
    now = time.time()
    for p in root.iterdir():
        if p.name.startswith(TRASH):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(TMP) and p.name.endswith(".lock"):
            _remove_if_unlocked(p, root / p.name[: -len(".lock")], stale_after)
        elif p.name.startswith(TMP) and not (root / f"{p.name}.lock").exists():
            # A folder without its lock file: its writer is gone (the lock goes last).
            try:
                if fcntl is not None or now - p.stat().st_mtime > stale_after:
                    shutil.rmtree(p, ignore_errors=True)
            except FileNotFoundError:
                pass


def _remove_if_unlocked(lock_path: Path, tmp: Path, stale_after: float) -> None:
    try:
        fd = os.open(lock_path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        if fcntl is None:  # no locks here: judged by age
            if time.time() - os.fstat(fd).st_mtime > stale_after:
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
