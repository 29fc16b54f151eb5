"""Retention: ``nbflow gc`` and ``nf.gc()`` decide which runs to keep and free the rest.

Rules, applied in this order:

1. Runs still in progress (in any process) and the newest run are always kept.
2. ``keep_last=N`` keeps the N newest runs; ``max_age`` keeps runs younger than that.
   Given both, a run is kept if either keeps it.  Given neither, every run is kept.
3. ``max_bytes`` then drops the oldest kept runs until the results they reference fit in
   the budget.
4. A stored result is removed only if no kept run references it (so the cache keeps
   serving everything a kept run produced), and never one created since the oldest run
   still in progress started (such a run may not have recorded its reference yet).

5. The ``nf.File`` digest memo (``file_digests``) loses the rows of files that are gone or
   changed (their digest can never be used again) and the rows not used for
   ``file_digest_age``: by default ``max_age`` when given, else :data:`FILE_DIGEST_AGE`
   (30 days); ``"never"`` keeps them (:func:`nbflow.store.filememo.prune`).  A row is only
   a memo (dropping it costs one re-hash of the file if it is ever an input again), so it
   gets a default expiry, as ``git gc`` prunes unreachable objects after two weeks by default
   (``gc.pruneExpire``) and unreachable reflog entries after 30 days; ``pip cache`` never
   expires anything and ``dvc gc`` drops what is unused at once, but both are about the data
   itself, which nbflow's runs and results rules (1-4) govern.

6. A batch run's kernel log (``batches/BATCH.kernel.log``: what its kernel process printed
   itself) older than ``max_age`` is removed; without ``max_age`` logs are kept, as batch
   records are.  The log of a batch still in progress is kept, as its runs are (rule 1):
   its kernel is writing there, and the batch shows the log's last lines if it dies.

Journal rows go first, in one transaction; files follow.  A crash in between leaves
files without rows, which the next ``gc`` removes as orphans (files without a row, and
``.tmp-*`` leftovers of interrupted writes, once older than ``grace`` seconds).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..core.errors import WorkflowDefinitionError
from ..core.processes import pid_alive
from ..core.units import parse_amount
from .blobs import unlink_nofollow
from .filememo import prune as prune_file_digests
from .history import _HOST
from .journal import write_transaction
from .store import Store, get_store, store_home

_AGE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h|d|w)?\s*$", re.IGNORECASE)
_AGE_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# nf.File digests unused for this long go at gc when no max_age says otherwise (see rule 5)
FILE_DIGEST_AGE = 30 * 86400.0


def parse_age(value: float | int | str | timedelta) -> float:
    """Seconds in an age such as ``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"`` or a number."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise WorkflowDefinitionError(f"max_age must be a finite number of seconds >= 0, got {value!r}")
        return float(value)
    m = _AGE.match(str(value))
    if not m:
        raise WorkflowDefinitionError(
            f"cannot read {value!r} as an age; write e.g. '7d', '12h', '30m' or seconds")
    return float(m.group(1)) * _AGE_UNITS[m.group(2).lower() if m.group(2) else None]


def parse_bytes(value: float | int | str) -> float:
    """Bytes in a size such as ``"10GB"``, ``"500MiB"`` or a number."""
    amount = parse_amount(value, what="max_bytes")
    if not math.isfinite(amount):
        raise WorkflowDefinitionError(f"max_bytes must be a finite size such as '10GB', got {value!r}")
    return amount


@dataclass
class GcReport:
    """What ``gc`` removed (or, with ``dry_run``, would remove)."""

    dry_run: bool
    runs_removed: list[tuple[str, str, float]] = field(default_factory=list)  # (id, name, start)
    runs_kept: int = 0
    results_removed: int = 0
    bytes_freed: int = 0
    orphan_files_removed: int = 0
    kept_bytes: int = 0
    file_digests_removed: int = 0
    file_digest_age: float | None = FILE_DIGEST_AGE  # None: unused digests were kept
    kernel_logs_removed: int = 0

    def _digest_rule(self) -> str:
        if self.file_digest_age is None:
            return "file gone or changed"
        return f"file gone or changed, or unused for {_age_text(self.file_digest_age)}"

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"nbflow gc: {verb} {len(self.runs_removed)} run(s), {self.results_removed} stored "
                 f"result(s) and {self.orphan_files_removed} orphan file(s), {_human(self.bytes_freed)}; "
                 f"kept {self.runs_kept} run(s) referencing {_human(self.kept_bytes)}",
                 f"  {verb} {self.file_digests_removed} file digest(s) of nf.File inputs "
                 f"({self._digest_rule()})"]
        if self.kernel_logs_removed:
            lines.append(f"  {verb} {self.kernel_logs_removed} batch kernel log(s)")
        for rid, name, start in self.runs_removed:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(start)) if start else "?"
            lines.append(f"  {rid}  {name}  (started {when})")
        return "\n".join(lines)


def _age_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"


def digest_age(file_digest_age: float | str | timedelta | None, max_age: float | None) -> float | None:
    """Seconds after which an unused ``nf.File`` digest goes (None: never): the given
    ``file_digest_age`` (``"never"`` keeps them), else ``max_age``, else 30 days."""
    if isinstance(file_digest_age, str) and file_digest_age.strip().lower() == "never":
        return None
    if file_digest_age is not None:
        return parse_age(file_digest_age)
    return max_age if max_age is not None else FILE_DIGEST_AGE


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def gc(
    keep_last: int | None = None,
    max_age: float | str | timedelta | None = None,
    max_bytes: float | str | None = None,
    *,
    file_digest_age: float | str | timedelta | None = None,
    dry_run: bool = False,
    grace: float = 3600.0,
    home: str | os.PathLike[str] | None = None,
) -> GcReport:
    """Remove old runs and the stored results only they reference (see the module docstring).

    ``nf.gc(keep_last=20)``, ``nf.gc(max_age="7d")``, ``nf.gc(max_bytes="10GB")``; with
    ``dry_run=True`` nothing is removed and the report says what would be.
    ``file_digest_age`` (``"14d"``, ``"never"``): how long an unused ``nf.File`` digest is
    kept; default ``max_age`` if given, else 30 days.
    """
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int)
                                  or keep_last < 0):
        raise WorkflowDefinitionError(f"keep_last must be a whole number >= 0, got {keep_last!r}")
    age = parse_age(max_age) if max_age is not None else None
    digests = digest_age(file_digest_age, age)
    budget = parse_bytes(max_bytes) if max_bytes is not None else None
    where = Path(home).expanduser().absolute() if home is not None else store_home()
    if not (where / "journal.sqlite").is_file():  # (a mistyped --home must not make a new store)
        from .journal import StoreError

        raise StoreError(f"no usable nbflow store at {where} (no journal there, so nothing to collect): "
                         "give the store's directory with --home (home=) or $NBFLOW_HOME, or run from "
                         "the project that has it")
    store = get_store(where, warn=False)
    if store is None:
        from .journal import StoreError

        raise StoreError(f"no usable nbflow store at {home or store_home()}: check it with `nbflow doctor`, "
                         "or point --home (home=) or $NBFLOW_HOME at your store")
    store.journal.flush()
    now = time.time()
    conn = store.journal.reader()
    try:
        return _gc(store, conn, keep_last, age, budget, dry_run, grace, now, digests)
    finally:
        conn.close()


def _gc(store: Store, conn: Any, keep_last: int | None, age: float | None, budget: float | None,
        dry_run: bool, grace: float, now: float, digests: float | None) -> GcReport:
    report = GcReport(dry_run=dry_run, file_digest_age=digests)
    runs = conn.execute("SELECT id, name, start, status, host, pid FROM runs ORDER BY start DESC").fetchall()
    active = {r[0] for r in runs if r[3] == "running" and (r[4] != _HOST or pid_alive(r[5]))}
    keep: set[str] = set(active)
    if runs:
        keep.add(runs[0][0])
    for rank, (rid, _name, start, *_rest) in enumerate(runs):
        by_count = keep_last is not None and rank < keep_last
        by_age = age is not None and start is not None and now - start <= age
        if (keep_last is None and age is None) or by_count or by_age:
            keep.add(rid)
    sizes = dict(conn.execute("SELECT key, size FROM blobs").fetchall())
    refs: dict[str, set[str]] = {}
    for rid, blob in conn.execute("SELECT DISTINCT run_id, blob FROM task_runs WHERE blob IS NOT NULL"):
        refs.setdefault(rid, set()).add(blob)
    if budget is not None:
        used: set[str] = set()
        total = 0
        for rank, (rid, *_rest) in enumerate(runs):  # newest first
            if rid not in keep:
                continue
            new = refs.get(rid, set()) - used
            extra = sum(sizes.get(b, 0) for b in new)
            if total + extra > budget and rank > 0 and rid not in active:
                keep.discard(rid)
                continue
            used |= new
            total += extra
    removed = [r for r in runs if r[0] not in keep]
    report.runs_removed = [(r[0], r[1], r[2]) for r in removed]
    report.runs_kept = len(runs) - len(removed)
    kept_blobs: set[str] = set()
    for rid in keep:
        kept_blobs |= refs.get(rid, set())
    oldest_active = min((r[2] for r in runs if r[0] in active and r[2] is not None), default=None)
    protect_after = oldest_active if oldest_active is not None else math.inf
    created = dict(conn.execute("SELECT key, created FROM blobs").fetchall())
    doomed = [b for b in sizes if b not in kept_blobs and (created.get(b) or 0) < protect_after]
    report.results_removed = len(doomed)
    report.bytes_freed = sum(sizes[b] for b in doomed)
    report.kept_bytes = sum(sizes.get(b, 0) for b in kept_blobs)
    removed_ids = [r[0] for r in removed]

    if not dry_run and (removed_ids or doomed):
        def remove(c: sqlite3.Connection) -> None:
            for table in ("events", "task_runs", "nodes", "task_means"):
                c.executemany(f"DELETE FROM {table} WHERE run_id = ?", [(r,) for r in removed_ids])
            c.executemany("DELETE FROM runs WHERE id = ?", [(r,) for r in removed_ids])
            c.executemany("DELETE FROM cache WHERE blob = ?", [(b,) for b in doomed])
            c.executemany("DELETE FROM blobs WHERE key = ?", [(b,) for b in doomed])
            c.execute("DELETE FROM code WHERE digest NOT IN (SELECT code FROM fingerprints)")

        write_transaction(conn, remove, "gc")
        store.forget_pending()
        for b in doomed:
            store.blobs.delete(b)

    # Files without a row: a write interrupted before its journal row, or a row gc removed
    # just now (already deleted above) -- only once they are older than the grace period.
    rows = {k for (k,) in conn.execute("SELECT key FROM blobs").fetchall()}
    doomed_set = set(doomed)
    for key, path, size, mtime in store.blobs.files():
        if key is not None and (key in rows and key not in doomed_set):
            continue
        if key in doomed_set:
            continue  # counted above (and deleted, unless dry run)
        if now - mtime < grace:
            continue
        report.orphan_files_removed += 1
        report.bytes_freed += size
        if not dry_run:
            unlink_nofollow(path)  # (never through a symbolic link)
    report.file_digests_removed = prune_file_digests(conn, unused_for=digests, now=now, dry_run=dry_run)
    if age is not None:
        report.kernel_logs_removed = _old_kernel_logs(store.home, now - age, dry_run, _busy_batches(conn))
    if not dry_run and (removed_ids or doomed or report.file_digests_removed):
        with contextlib.suppress(Exception):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return report


def _busy_batches(conn: Any) -> set[str]:
    """Ids of the batch runs still in progress (in any process), as rule 1 tells runs."""
    rows = conn.execute("SELECT id, host, pid FROM batches WHERE status = 'running'").fetchall()
    return {bid for bid, host, pid in rows if host != _HOST or pid_alive(pid)}


def _old_kernel_logs(home: Path, before: float, dry_run: bool, busy: set[str]) -> int:
    """Remove (or count, with ``dry_run``) batch kernel logs last written before ``before``,
    but those of the batches in ``busy`` (still running: a quiet kernel's log is old)."""
    n = 0
    for path in (home / "batches").glob("*.kernel.log"):
        if path.name.removesuffix(".kernel.log") in busy:
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.lstat().st_mtime < before:
                n += 1
                if not dry_run:
                    unlink_nofollow(path)
    return n
