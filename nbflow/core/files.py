"""``nf.File``: a path whose *content* is part of the cache key.

A task that reads ``"data/sales.csv"`` by path gets the same cache key after the file is
rewritten: the string did not change.  Passing ``nf.File("data/sales.csv")`` instead makes
the key depend on the bytes of the file (or of every file under a directory, or of every
file a glob matches), so a changed file re-runs the task and ``run.explain`` names it.

A ``File`` is an ``os.PathLike``: ``open(f)``, ``pd.read_csv(f)``, ``Path(f)`` work as with
the plain path.  Hashing a large file is done once per content: the digest is kept with the
file's size, modification time (ns) and inode, and reused while those are unchanged (in
this process, and across processes through the run store, see :class:`ContentDigests`).

``@nf.task(reads=[...])`` entries that name existing files, directories or globs (or start
with ``file:``) enter the key the same way; ``writes=[...]`` such entries are the task's
*products*: a cached result is used only while every product still exists with the
content it had when the task wrote it.
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

_GLOB_CHARS = frozenset("*?[")


class File(os.PathLike):  # type: ignore[type-arg]
    """A file, a directory or a glob pattern whose content identifies it (see the module)."""

    __slots__ = ("path",)
    path: str

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if isinstance(path, File):
            path = str(path.path)
        if not isinstance(path, (str, os.PathLike)):
            from .errors import WorkflowDefinitionError

            raise WorkflowDefinitionError(f"nf.File() takes a path, got {type(path).__name__}")
        self.path = os.fspath(path)

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"nf.File({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, File) and other.path == self.path

    def __hash__(self) -> int:
        return hash(("nbflow.File", self.path))

    def __reduce__(self) -> tuple[Any, ...]:
        return (File, (self.path,))

    @property
    def is_glob(self) -> bool:
        return any(c in _GLOB_CHARS for c in self.path)

    def files(self) -> list[Path]:
        """The files this stands for, sorted: itself, those under a directory, or the matches."""
        found = [Path(p) for p in glob.glob(self.path, recursive=True)] if self.is_glob \
            else [Path(self.path)]
        out: list[Path] = []
        for p in found:
            if p.is_dir():
                out += [q for q in p.rglob("*") if q.is_file()]
            elif p.exists():
                out.append(p)
        return sorted(out)


def file_entry(name: str) -> File | None:
    """A ``reads=``/``writes=`` entry that names a file: ``file:PATH``, an existing path, or
    a glob that matches something.  Other entries (``"db:sales"``) are names, not files."""
    if name.startswith("file:"):
        return File(name[5:])
    if ":" in name.split("/")[0] and not os.path.exists(name):  # a scheme such as db:sales
        return None
    f = File(name)
    if f.is_glob:
        return f if glob.glob(name, recursive=True) else None
    return f if os.path.exists(name) else None


class PersistentDigests(Protocol):
    """Where digests outlive the process (the store's table; installed by the store, so
    that this module needs no store).  ``sig`` is ``(size, mtime_ns, inode)``."""

    def get(self, path: str, sig: tuple[int, int, int]) -> str | None: ...

    def put(self, path: str, sig: tuple[int, int, int], digest: str) -> None: ...


class ContentDigests:
    """Content digests of files, reused while a file's size, mtime and inode are unchanged.

    Kept in memory, and in :attr:`persistent` when one is installed (the run store does
    it), so that a new kernel does not re-read a large file nobody touched.  The assumption
    is the one ``make`` and git make: a file rewritten with the same size, the same
    modification time (to the nanosecond the file system records) and the same inode is
    taken to be unchanged.  Tools that restore an old mtime after writing (``touch -d``,
    some copy tools with "preserve times") can defeat it; delete the file and write it
    anew, or change its mtime, to force a re-read.
    """

    def __init__(self, digest_file: Callable[[Path], str], combine: Callable[..., str]) -> None:
        self._digest_file = digest_file
        self._combine = combine
        self._memo: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._lock = threading.Lock()
        self.persistent: PersistentDigests | None = None

    def of_file(self, path: Path) -> str:
        st = path.stat()
        sig = (st.st_size, st.st_mtime_ns, st.st_ino)
        key = str(path.resolve())
        with self._lock:
            hit = self._memo.get(key)
        if hit is not None and hit[0] == sig:
            return hit[1]
        keep = self.persistent
        digest = None
        if keep is not None:
            try:
                digest = keep.get(key, sig)
            except Exception:  # (a memo that fails only costs a re-read)
                digest = None
        if digest is None:
            digest = self._digest_file(path)
            if keep is not None:
                try:
                    keep.put(key, sig, digest)
                except Exception:
                    pass
        with self._lock:
            self._memo[key] = (sig, digest)
        return digest

    def of(self, f: File) -> str:
        """The digest of everything ``f`` stands for (missing: a digest that says so)."""
        files = f.files()
        if not files:
            return self._combine("file-missing", f.path)
        if len(files) == 1 and not f.is_glob and not Path(f.path).is_dir():
            return self._combine("file", self.of_file(files[0]))
        base = Path(f.path) if not f.is_glob else Path(".")
        parts: Iterable[str] = (f"{_rel(p, base)}={self.of_file(p)}" for p in files)
        return self._combine("files", *parts)


def _rel(p: Path, base: Path) -> str:
    try:
        return str(p.relative_to(base))
    except ValueError:
        return str(p)
