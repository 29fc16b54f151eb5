"""Content-addressed result files: written atomically, verified on every read.

A stored result's name is the digest of its bytes (:func:`nbflow.store.hashing.digest`),
so equal results are stored once, a name says exactly what the file must contain, and
checking a file is hashing it again.  Files live in ``blobs/ab/cdef...`` (256 fan-out
directories keep listings short).

Writing is the classic atomic sequence: a temporary file in the same directory, write,
``fsync``, ``os.replace`` onto the final name, ``fsync`` of the directory.  A process
killed at any point leaves either no file, a stray ``.tmp-*`` file, or a complete file:
never a torn file under a real name.  The blob is *committed* only when the journal row
naming it is in SQLite (written after the file), so a complete file without a row is an
orphan that ``nbflow gc`` removes and that a later write simply replaces.

Names come from the journal, which someone else might have edited, so a name is used as
a path only after it is checked: a fixed alphabet and length (an algorithm letter and 32
hex digits), and the resolved path must lie inside ``blobs/``.  Deleting never follows a
symbolic link: the fan-out directory is opened with ``O_NOFOLLOW`` and the file unlinked
relative to it, so neither a crafted row nor a symlinked directory can make a cleanup
remove a file outside the store.

Small results do not come here: they live inline in the SQLite ``blobs`` table (see
:mod:`nbflow.store.journal`), with the same naming and the same verification.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..core.errors import BadBlobKey, BlobCorrupt, BlobError, BlobMissing
from . import hashing
from .tidy import tmp_prefix

KEY_RE = re.compile(r"[xb][0-9a-f]{32}")  # what hashing.digest makes: algorithm letter + 128 bits
_NOFOLLOW_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)


def check_key(key: object) -> str:
    """``key`` if it is a well-formed result name, else :class:`BadBlobKey`."""
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise BadBlobKey(f"{str(key)[:80]!r} is not a valid stored result name (the journal was "
                         "damaged or edited)")
    return key




class BlobStore:
    """Result files under ``<home>/blobs``."""

    def __init__(self, home: Path) -> None:
        self.root = home / "blobs"

    def path(self, key: str) -> Path:
        """Where the file of ``key`` lives (``key`` checked: never a path outside ``blobs/``)."""
        check_key(key)
        return self.root / key[:3] / key[3:]

    def _inside(self, path: Path) -> Path:
        """``path`` if, with every link resolved, it still lies inside the blobs directory."""
        real, root = path.resolve(), self.root.resolve()
        if not real.is_relative_to(root):
            raise BadBlobKey(f"stored result {path.name} resolves to {real}, outside the store "
                             f"{root} (a symbolic link in the store?)")
        return real

    def write(self, key: str, data: bytes | memoryview) -> None:
        """Store ``data`` (whose digest is ``key``) durably; no-op if a good copy exists."""
        path = self.path(key)
        if path.exists():
            try:
                self.read(key)
                return
            except BlobError:
                pass  # a damaged copy: replace it
        if not path.parent.exists():
            self.root.mkdir(mode=0o700, exist_ok=True)
            path.parent.mkdir(mode=0o700, exist_ok=True)
        if path.parent.is_symlink() or self.root.is_symlink():
            raise PermissionError(f"{path.parent} is a symbolic link; nbflow writes results only "
                                  "inside its own store directory")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=tmp_prefix())
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)

    def read(self, key: str) -> bytes:
        """The bytes stored under ``key``, verified; raises BlobMissing / BlobCorrupt."""
        try:
            data = self._inside(self.path(key)).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(f"stored result {key} is missing") from None
        if not hashing.verify(data, key):
            raise BlobCorrupt(f"stored result {key} failed its checksum")
        return data

    def delete(self, key: str) -> int:
        """Remove the file of ``key``; returns the bytes freed (0 if it was not there, or
        if ``key`` is not a valid name: such a name has no file of ours to delete)."""
        try:
            path = self.path(key)
        except BadBlobKey:
            return 0
        return unlink_nofollow(path)

    def files(self) -> Iterator[tuple[str | None, Path, int, float]]:
        """(key or None for a temporary file, path, size, mtime) of every file present."""
        if not self.root.exists():
            return
        if self.root.is_symlink():
            return
        for sub in self.root.iterdir():
            if sub.is_symlink() or not sub.is_dir():  # never walk into a linked directory
                continue
            for p in sub.iterdir():
                try:
                    st = p.lstat()
                except FileNotFoundError:
                    continue
                key = None if p.name.startswith(".tmp-") else sub.name + p.name
                yield key, p, st.st_size, st.st_mtime


def unlink_nofollow(path: Path) -> int:
    """Unlink ``path`` without following any link in its last two components (the blobs
    fan-out directory and the file); returns the bytes freed, 0 if absent or refused."""
    try:
        dfd = os.open(path.parent, _NOFOLLOW_DIR)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    except OSError:  # ELOOP: the directory is a symbolic link -- not ours to clean
        return 0
    try:
        try:
            st = os.stat(path.name, dir_fd=dfd, follow_symlinks=False)
            os.unlink(path.name, dir_fd=dfd)  # removes a link itself, never its target
        except FileNotFoundError:
            return 0
        return st.st_size
    finally:
        os.close(dfd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
