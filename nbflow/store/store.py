"""Where the store lives, and the one object per store that the other modules share.

The store is a directory: ``.nbflow/`` in the working directory, or ``$NBFLOW_HOME``.  It
is resolved when each run starts (so a test or a notebook can point ``NBFLOW_HOME``
elsewhere at any time), created private to the user (mode 0700, files 0600; an existing
store open to others is used with a warning, :mod:`.privacy`), and holds::

    journal.sqlite (+ -wal, -shm)   runs, task runs, events, cache index  (journal.py)
    blobs/xab/cdef...                results too big to live inline          (blobs.py)

A process keeps one :class:`Store` per directory.  If the directory or its database
cannot be used (read-only disk, a newer schema, a damaged journal, ``NBFLOW_STORE=off``),
runs still work: without a journal and without caching, and a warning says why once (a
damaged journal is named as such, with ``nbflow doctor``).  A store that fails during a run
is dropped (:func:`invalidate`) and opened afresh by the next run (:mod:`.guard`).  Cache
rows carry a signature (:mod:`.signing`) checked before their result is loaded.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import NbflowStoreWarning
from . import hashing, privacy, signing, tidy
from .blobs import BlobCorrupt, BlobMissing, BlobStore
from .journal import Journal, Op, StoreBusy, StoreError, dumps

INLINE_MAX = 32 * 1024  # results up to this many bytes live inline in SQLite
KEY_FILTER_MAX = 250_000  # cache keys kept in memory to answer most misses without a query



PROJECT_MARKERS = (".git", "pyproject.toml")


def store_home(start: str | os.PathLike[str] | None = None) -> Path:
    """The store directory in force now, found as git finds ``.git``.

    ``$NBFLOW_HOME`` wins; else the nearest existing ``.nbflow/`` in the working directory
    (or ``start``: the dashboard's server root) or above it (so notebooks in a project's
    subfolders and ``nbflow runs`` at its root share one store); else a new ``.nbflow/`` at
    the project root: the nearest folder holding ``.git`` or ``pyproject.toml``, or the
    working directory when there is none.
    """
    env = os.environ.get("NBFLOW_HOME")
    if env:
        return Path(env).expanduser().absolute()
    cwd = Path.cwd() if start is None else Path(start).expanduser().absolute()
    searched = _below_ceiling(cwd)
    for folder in searched:
        if (folder / ".nbflow").is_dir():
            return folder / ".nbflow"
    for folder in searched:
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return folder / ".nbflow"
    return cwd / ".nbflow"


def _below_ceiling(cwd: Path) -> list[Path]:
    """``cwd`` and the folders above it that the search may look in: it stops below any
    folder named in ``$NBFLOW_CEILING_DIRECTORIES`` (``os.pathsep``-separated), as git's
    ``GIT_CEILING_DIRECTORIES`` does, so a store or project marker above (a stray
    ``/tmp/.nbflow``, a home folder's ``.git``) is not taken for this one."""
    raw = os.environ.get("NBFLOW_CEILING_DIRECTORIES", "")
    ceilings = {Path(p).expanduser().absolute() for p in raw.split(os.pathsep) if p}
    out = []
    for folder in (cwd, *cwd.parents):
        if folder in ceilings:
            break
        out.append(folder)
    return out


def store_disabled() -> bool:
    return os.environ.get("NBFLOW_STORE", "").strip().lower() in ("0", "off", "false", "no")


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """Where the result for one cache key is, and what its value hashed to."""

    blob: str
    value_digest: str | None
    size: int
    inline: bytes | None  # the stored bytes when they live inline (else read the file)
    trust: str = "ok"  # "bad": the index row's signature fails; "unsigned": an old row


PUT_BLOB = Op("INSERT OR IGNORE INTO blobs(key, size, inline, created) VALUES(?,?,?,?)")
PUT_CACHE = Op("INSERT OR REPLACE INTO cache(key, blob, value_digest, task, size, run_id, created, sig) "
               "VALUES(?,?,?,?,?,?,?,?)")
DEL_CACHE_FOR_BLOB = Op("DELETE FROM cache WHERE blob = ?", barrier=True)
DEL_BLOB = Op("DELETE FROM blobs WHERE key = ?", barrier=True)
PUT_CODE = Op("INSERT OR IGNORE INTO code(digest, name, parts, notes) VALUES(?,?,?,?)")
def _fingerprint_row(workflow: str, key: str, task: str, cache_key: str, code: str, inputs: dict[str, str],
                     options: str, run_id: str, now: float) -> tuple[Any, ...]:
    if all(k.isidentifier() or k.replace("[", "").replace("]", "").isidentifier() for k in inputs):
        text = "{" + ",".join([f'"{k}":"{v}"' for k, v in inputs.items()]) + "}"  # (hex digests)
    else:
        text = dumps(inputs)
    return (workflow, key, task, cache_key, code, text, options, run_id, now)


PUT_FINGERPRINT = Op("INSERT OR REPLACE INTO fingerprints(workflow, key, task, cache_key, code, inputs, "
                     "options, run_id, time) VALUES(?,?,?,?,?,?,?,?,?)", _fingerprint_row)

_FIND = ("SELECT c.blob, c.value_digest, b.size, b.inline, b.key IS NOT NULL, c.sig FROM cache c "
         "LEFT JOIN blobs b ON b.key = c.blob WHERE c.key = ?")


class Store:
    """A store directory: its journal (SQLite) and its result files."""

    def __init__(self, home: Path) -> None:
        self.home = home
        _make_private_dir(home)
        privacy.check_private(home, NbflowStoreWarning)
        self.journal = Journal(home / "journal.sqlite")
        self.blobs = BlobStore(home)
        tidy.remove_stale_tmp(self.blobs.root)  # what writers killed mid-write left behind
        # Cache entries this process queued, until the writer has committed them: a run
        # starting right after another sees its results without waiting for the disk.
        self.pending: dict[str, CacheEntry] = {}
        # Every cache key known to be stored (None: too many to keep): a key not in it is a
        # miss without a query.  Synced incrementally (by rowid) as each run starts.
        self._keys: set[str] | None = set()
        self._keys_rowid = 0
        self.journal.on_commit.append(self._committed)

    def __repr__(self) -> str:
        return f"<nbflow Store {self.home}>"

    # -- the cache index -----------------------------------------------------------------

    def find(self, conn: sqlite3.Connection, key: str) -> CacheEntry | None:
        """The entry for cache ``key`` (this process's pending writes first), or None."""
        e = self.pending.get(key)
        if e is not None:
            return e
        if self._keys is not None and key not in self._keys:
            return None
        row = conn.execute(_FIND, (key,)).fetchone()
        if row is None or not row[4]:
            return None
        sig = row[5]
        trust = "unsigned" if sig is None else "ok" if signing.row_ok(sig, key, row[0], row[1]) else "bad"
        return CacheEntry(row[0], row[1], row[2], row[3], trust)

    def sync_keys(self, conn: sqlite3.Connection) -> None:
        """Learn the cache keys stored since the last sync (by any process)."""
        keys = self._keys
        if keys is None:
            return
        rows = conn.execute("SELECT rowid, key FROM cache WHERE rowid > ? ORDER BY rowid",
                            (self._keys_rowid,)).fetchall()
        if rows:
            keys.update(k for _, k in rows)
            self._keys_rowid = rows[-1][0]
        if len(keys) > KEY_FILTER_MAX:
            self._keys = None  # a big cache: ask SQLite every time instead

    def save(self, key: str, blob: str, data: bytes | None, size: int, value_digest: str | None,
             task: str, run_id: str, now: float, new_blob: bool = True) -> None:
        """Record that cache ``key`` has result ``blob`` (its file, if any, is written already)."""
        inline = data if data is not None and len(data) <= INLINE_MAX else None
        self.pending[key] = CacheEntry(blob, value_digest, size, inline)
        if self._keys is not None:
            self._keys.add(key)
        if new_blob:
            self.journal.put(PUT_BLOB, (blob, size, inline, now))
        self.journal.put(PUT_CACHE, (key, blob, value_digest, task, size, run_id, now,
                                     signing.row_sig(key, blob, value_digest)))

    def _committed(self, batch: list[tuple[Any, Any]]) -> None:
        pending = self.pending
        for op, params in batch:
            if op is PUT_CACHE:
                e = pending.get(params[0])
                if e is not None and e.blob == params[1]:
                    del pending[params[0]]

    def load(self, entry: CacheEntry) -> bytes:
        """The stored bytes of ``entry``, verified (raises BlobMissing / BlobCorrupt)."""
        if entry.trust != "ok":
            from .serialize import BadSignature, UnsignedResult

            if entry.trust == "unsigned":
                raise UnsignedResult("its cache entry was stored by an older nbflow without a signature")
            raise BadSignature(f"the cache entry for stored result {entry.blob} has a bad signature "
                               "(the journal was edited or copied from another user)")
        if entry.inline is not None:
            if not hashing.verify(entry.inline, entry.blob):
                raise BlobCorrupt(f"stored result {entry.blob} failed its checksum")
            return bytes(entry.inline)
        return self.blobs.read(entry.blob)

    def forget(self, blob: str) -> None:
        """Drop a damaged or missing result: its cache entries, its row and its file."""
        for k, e in list(self.pending.items()):
            if e.blob == blob:
                self.pending.pop(k, None)
        self.journal.put(DEL_CACHE_FOR_BLOB, (blob,))
        self.journal.put(DEL_BLOB, (blob,))
        try:
            self.blobs.delete(blob)
        except OSError:  # pragma: no cover - e.g. permissions; gc will retry
            pass

    def forget_pending(self) -> None:
        """Forget what this process believes is stored (after gc changed the store)."""
        self.pending.clear()
        self._keys, self._keys_rowid = set(), 0


def _make_private_dir(home: Path) -> None:
    if not home.exists():
        old = os.umask(0o077)
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
        finally:
            os.umask(old)
    if not home.is_dir():
        raise StoreError(f"{home} is not a directory")


def describe_failure(path: Path, e: BaseException) -> str:
    """What is wrong with the store at ``path`` and what to do, for a warning or an error."""
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, StoreBusy):
        return (f"the run store at {path} is locked by another process ({e}); this run is not "
                "journaled or cached")
    if isinstance(e, sqlite3.DatabaseError) and any(
            w in str(e).lower() for w in ("not a database", "malformed", "corrupt", "disk image",
                                          "no such table")):
        return (f"the run store's journal {path / 'journal.sqlite'} is damaged, replaced or "
                f"deleted ({text}); runs are not journaled or cached. Run `nbflow doctor --home "
                f"{path}` to check it and start a new journal that keeps the stored results")
    return (f"the run store at {path} cannot be used ({text}); runs are not journaled or "
            "cached. Set NBFLOW_HOME to a writable directory")


def invalidate(store: Store) -> None:
    """Forget ``store`` (it failed during a run): the next run opens the directory afresh."""
    with _LOCK:
        if _STORES.get(store.home) is store:
            del _STORES[store.home]


_STORES: dict[Path, Store] = {}
_BROKEN: dict[Path, str] = {}
_LOCK = threading.Lock()


def get_store(home: Path | str | None = None, *, warn: bool = True) -> Store | None:
    """The store at ``home`` (default: :func:`store_home`), opened once per process.

    Returns None, with one warning per directory, when the store cannot be used, and
    without a warning when it is switched off with ``NBFLOW_STORE=off``.
    """
    if home is None and store_disabled():
        return None
    path = Path(home).expanduser().absolute() if home is not None else store_home()
    s = _STORES.get(path)
    if s is not None:
        return s
    with _LOCK:
        s = _STORES.get(path)
        if s is not None:
            return s
        if path in _BROKEN:
            return None
        try:
            s = Store(path)
        except (OSError, sqlite3.Error, StoreError) as e:
            if not isinstance(e, StoreBusy):  # a held lock is retried by the next run
                _BROKEN[path] = f"{type(e).__name__}: {e}"
            if warn:
                warnings.warn(f"nbflow: {describe_failure(path, e)}", NbflowStoreWarning, stacklevel=3)
            return None
        _STORES[path] = s
        return s


__all__ = ["INLINE_MAX", "BlobCorrupt", "BlobMissing", "CacheEntry", "NbflowStoreWarning", "Store",
           "get_store", "store_home"]
