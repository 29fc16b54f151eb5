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

Small results do not come here: they live inline in the SQLite ``blobs`` table (see
:mod:`nbflow.store.journal`), with the same naming and the same verification.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..core.errors import BlobCorrupt, BlobError, BlobMissing
from . import hashing


class BlobStore:
    """Result files under ``<home>/blobs``."""

    def __init__(self, home: Path) -> None:
        self.root = home / "blobs"

    def path(self, key: str) -> Path:
        return self.root / key[:3] / key[3:]

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
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
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
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(f"stored result {key} is missing") from None
        if not hashing.verify(data, key):
            raise BlobCorrupt(f"stored result {key} failed its checksum")
        return data

    def delete(self, key: str) -> int:
        """Remove the file of ``key``; returns the bytes freed (0 if it was not there)."""
        path = self.path(key)
        try:
            size = path.stat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return 0

    def files(self) -> Iterator[tuple[str | None, Path, int, float]]:
        """(key or None for a temporary file, path, size, mtime) of every file present."""
        if not self.root.exists():
            return
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for p in sub.iterdir():
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                key = None if p.name.startswith(".tmp-") else sub.name + p.name
                yield key, p, st.st_size, st.st_mtime


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
