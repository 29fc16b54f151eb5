"""``nbflow doctor``: check a store, say what can be recovered, and start afresh if needed.

Checks, without changing anything:

* the journal: can it be opened, does ``PRAGMA integrity_check`` pass, which schema
  version; how many runs and cache entries it holds;
* the result files: each is read and its checksum verified (``ok``, ``corrupt``), temporary
  files left by interrupted writes are counted;
* the permissions (a store others can write to).

With ``repair=True`` a damaged journal is moved aside (``journal.sqlite.damaged-<time>``,
with its ``-wal``/``-shm``), a new one is created, and whatever can still be read from the
old one is copied over table by table: runs and their history, and the cache entries whose
result is still present and intact.  Result files are kept; a cache entry whose rows could
not be salvaged simply misses next time and is recomputed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import hashing, privacy
from .blobs import KEY_RE, BlobStore
from .journal import SCHEMA_VERSION, Journal

TABLES = ("meta", "runs", "nodes", "task_runs", "events", "blobs", "cache", "code", "fingerprints")


@dataclass
class DoctorReport:
    """What ``nbflow doctor`` found (and did)."""

    home: Path
    journal_ok: bool = False
    journal_problem: str | None = None
    schema_version: int | None = None
    runs: int | None = None
    cache_entries: int | None = None
    files_ok: int = 0
    files_corrupt: list[str] = field(default_factory=list)
    tmp_files: int = 0
    loose_permissions: bool = False
    moved_to: Path | None = None
    salvaged: dict[str, int] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.journal_ok and not self.files_corrupt

    def __str__(self) -> str:
        lines = [f"nbflow doctor: {self.home}"]
        if self.journal_ok:
            lines.append(f"  journal      ok (schema {self.schema_version}; {self.runs} run(s), "
                         f"{self.cache_entries} cache entr{'y' if self.cache_entries == 1 else 'ies'})")
        else:
            lines.append(f"  journal      DAMAGED: {self.journal_problem}")
        lines.append(f"  result files {self.files_ok} ok, {len(self.files_corrupt)} corrupt"
                     + (f", {self.tmp_files} unfinished temporary file(s)" if self.tmp_files else ""))
        for key in self.files_corrupt[:10]:
            lines.append(f"    corrupt: {key}")
        if self.loose_permissions:
            lines.append(f"  permissions  others can write to this store: chmod -R go-rwx {self.home}")
        if self.moved_to is not None:
            lines.append(f"  repaired     damaged journal moved to {self.moved_to}; a new one was started")
            for table, n in self.salvaged.items():
                lines.append(f"    salvaged {n} row(s) of {table}")
            for table, why in self.lost.items():
                lines.append(f"    could not salvage {table}: {why}")
            lines.append(f"  kept         {self.files_ok} result file(s)")
        elif not self.journal_ok:
            lines.append("  recoverable  the result files above; run `nbflow doctor --repair` to move the "
                         "damaged journal aside and start a new one (cached results whose entries can be "
                         "read are kept; the rest is recomputed)")
        return "\n".join(lines)


def _check_journal(path: Path, report: DoctorReport) -> None:
    if not path.exists():
        report.journal_problem = "journal.sqlite is missing"
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as e:
        report.journal_problem = f"{type(e).__name__}: {e}"
        return
    try:
        result = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if result != ["ok"]:
            report.journal_problem = "integrity check failed: " + "; ".join(map(str, result[:3]))
            return
        report.schema_version = conn.execute("PRAGMA user_version").fetchone()[0]
        if report.schema_version != SCHEMA_VERSION:
            report.journal_problem = (f"schema version {report.schema_version}, this nbflow writes "
                                      f"{SCHEMA_VERSION} (opening it with nbflow migrates it)")
            report.journal_ok = report.schema_version < SCHEMA_VERSION
            return
        report.runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        report.cache_entries = conn.execute("SELECT COUNT(*) FROM cache").fetchone()[0]
        report.journal_ok = True
    except sqlite3.Error as e:
        report.journal_problem = f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def _check_files(home: Path, report: DoctorReport) -> set[str]:
    good: set[str] = set()
    for key, path, _size, _mtime in BlobStore(home).files():
        if key is None:
            report.tmp_files += 1
            continue
        try:
            ok = KEY_RE.fullmatch(key) is not None and hashing.verify(path.read_bytes(), key)
        except OSError:
            ok = False
        if ok:
            report.files_ok += 1
            good.add(key)
        else:
            report.files_corrupt.append(key)
    return good


def diagnose(home: str | os.PathLike[str]) -> DoctorReport:
    """Check the store at ``home`` and report; changes nothing."""
    path = Path(home).expanduser().absolute()
    report = DoctorReport(path)
    _check_journal(path / "journal.sqlite", report)
    _check_files(path, report)
    report.loose_permissions = privacy.writable_by_others(path)
    return report


def _salvage(old: Path, new: Path, good_files: set[str], report: DoctorReport) -> None:
    try:
        src = sqlite3.connect(f"file:{old}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as e:
        report.lost["everything"] = f"{type(e).__name__}: {e}"
        return
    dst = sqlite3.connect(new, isolation_level=None)
    try:
        inline: set[str] = set()
        for table in TABLES:
            if table == "meta":
                continue
            try:
                cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})").fetchall()]
                rows = src.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall() if cols else []
            except sqlite3.Error as e:
                report.lost[table] = f"{type(e).__name__}: {e}"
                continue
            if table == "blobs":
                k = cols.index("key")
                i = cols.index("inline")
                rows = [r for r in rows
                        if (r[i] is not None and hashing.verify(r[i], r[k])) or r[k] in good_files]
                inline = {r[k] for r in rows}
            if table == "cache":
                b = cols.index("blob")
                rows = [r for r in rows if r[b] in inline]
            if not rows:
                continue
            marks = ",".join("?" * len(cols))
            dst.execute("BEGIN")
            dst.executemany(f"INSERT OR IGNORE INTO {table}({', '.join(cols)}) VALUES({marks})", rows)
            dst.execute("COMMIT")
            report.salvaged[table] = len(rows)
    finally:
        src.close()
        dst.close()


def repair(home: str | os.PathLike[str]) -> DoctorReport:
    """Diagnose; if the journal is damaged, move it aside and start a new one, salvaging
    what can be read (see the module docstring)."""
    report = diagnose(home)
    if report.journal_ok:
        return report
    path = report.home / "journal.sqlite"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = report.home / f"journal.sqlite.damaged-{stamp}"
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(aside) + suffix))
    report.moved_to = aside
    Journal(path).close()  # a new, empty journal at the current schema
    good = {k for k, *_ in BlobStore(report.home).files() if k is not None} - set(report.files_corrupt)
    if aside.exists():
        with contextlib.suppress(sqlite3.Error):
            _salvage(aside, path, good, report)
    from .store import _BROKEN, _LOCK

    with _LOCK:  # this process may use the store again
        _BROKEN.pop(report.home, None)
    return report
