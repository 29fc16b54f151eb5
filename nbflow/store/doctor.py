"""``nbflow doctor``: check a store, say what can be recovered, and start afresh if needed.

Checks, without changing anything:

* the journal: can it be opened, does ``PRAGMA integrity_check`` pass, which schema
  version; how many runs and cache entries it holds;
* the result files: each is read and its checksum verified (``ok``, ``corrupt``), temporary
  files left by interrupted writes are counted;
* the permissions (a store others can write to).

With ``repair=True`` a damaged journal is moved aside (``journal.sqlite.damaged-<time>``,
with its ``-wal``/``-shm``), a new one is created, and whatever can still be read from the
old one is copied over, every table of the schema (:func:`schema_tables`, derived from the
journal's migrations, so a table a later schema adds is salvaged too): runs and their
history, task durations, batch records, outputs, ...; of the cache, only the entries whose
result is still present and intact.  Result files are kept; a cache entry whose rows could
not be salvaged simply misses next time and is recomputed.

A repair never races a writer: while another process has the journal open for writing (a
kernel, a batch run, a script that used the store), it refuses and changes nothing, naming
the processes (:mod:`.inuse`); whatever they committed after the move would otherwise land
in the journal moved aside.  The check and the move are not one step, so the move is
checked too (:func:`_move_aside`): the file moved must be the very file diagnosed (another
``nbflow doctor --repair`` may have moved that one aside meanwhile and started a new journal
under its name, which must not be taken for the damaged one), and nobody may have it open
for writing once it is moved (a process that opened it after the check, which would then
commit into the file moved aside).  Either way the file is put back under its name and the
repair refuses, as when the writer was there from the start.

A store written by a *newer* nbflow is not damaged: this nbflow cannot open it (it refuses,
see :mod:`.journal`), so doctor says so and ``repair`` leaves it exactly as it is; the newer
nbflow opens it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import hashing, privacy
from .blobs import KEY_RE, BlobStore
from .inuse import StoreInUse, local_writers, refuse_if_written
from .journal import MIGRATIONS, SCHEMA_VERSION, Journal


def schema_tables() -> tuple[str, ...]:
    """Every table of the current schema, in the order the migrations create them.

    Read from an empty in-memory database built by the journal's own migrations rather than
    kept as a list here: a list went stale at the schema bumps that added batches and
    task means, and ``--repair`` silently left their rows behind.
    """
    conn = sqlite3.connect(":memory:")
    try:
        for version in sorted(MIGRATIONS):
            for sql in MIGRATIONS[version]:
                conn.execute(sql)
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                            "AND name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return tuple(r[0] for r in rows)


@dataclass
class DoctorReport:
    """What ``nbflow doctor`` found (and did)."""

    home: Path
    journal_ok: bool = False
    journal_problem: str | None = None
    schema_version: int | None = None
    newer: bool = False  # written by a newer nbflow: not damaged, and never repaired here
    repair_refused: bool = False  # --repair was asked for a newer store, and did nothing
    runs: int | None = None
    cache_entries: int | None = None
    files_ok: int = 0
    files_corrupt: list[str] = field(default_factory=list)
    tmp_files: int = 0
    loose_permissions: bool = False
    moved_to: Path | None = None  # where --repair moved the damaged journal (None: nothing moved)
    started_new: bool = False  # --repair started a new journal (moved_to None: there was none)
    salvaged: dict[str, int] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)
    # which file the journal check looked at ((device, inode); None: missing): a repair
    # moves aside only that one (_move_aside)
    journal_file: tuple[int, int] | None = field(default=None, repr=False)

    @property
    def healthy(self) -> bool:
        return self.journal_ok and not self.files_corrupt

    def __str__(self) -> str:
        lines = [f"nbflow doctor: {self.home}"]
        if self.newer:
            lines.append(f"  journal      NEWER: {self.journal_problem}")
        elif self.journal_ok:
            older = (f", older than this nbflow's {SCHEMA_VERSION}: opening it with nbflow migrates it"
                     if self.schema_version is not None and self.schema_version < SCHEMA_VERSION else "")
            lines.append(f"  journal      ok (schema {self.schema_version}{older}; {self.runs} run(s), "
                         f"{self.cache_entries} cache entr{'y' if self.cache_entries == 1 else 'ies'})")
        else:
            lines.append(f"  journal      DAMAGED: {self.journal_problem}")
        lines.append(f"  result files {self.files_ok} ok, {len(self.files_corrupt)} corrupt"
                     + (f", {self.tmp_files} unfinished temporary file(s)" if self.tmp_files else ""))
        for key in self.files_corrupt[:10]:
            lines.append(f"    corrupt: {key}")
        if self.loose_permissions:
            lines.append(f"  permissions  others can write to this store: chmod -R go-rwx {self.home}")
        if self.started_new:
            lines.extend(self._repaired())
        elif self.repair_refused:
            lines.append("  not repaired this store was written by a newer nbflow, whose schema this one "
                         "does not know: it is left as it is (that nbflow's `nbflow doctor --repair` can "
                         "repair it)")
        elif not self.journal_ok and not self.newer:
            what = ("start a new journal" if self.journal_file is None
                    else "move the damaged journal aside and start a new one")
            lines.append(f"  recoverable  the result files above; run `nbflow doctor --repair` to {what} "
                         "(cached results whose entries can be read are kept; the rest is recomputed)")
        return "\n".join(lines)

    def _repaired(self) -> list[str]:
        """What ``--repair`` did: where the old journal went (if there was one), what was
        salvaged from it."""
        if self.moved_to is None:  # (missing when diagnosed: there was nothing to move aside)
            return ["  repaired     there was no journal, so nothing was moved aside; a new one was "
                    "started (empty: no run or cache entry to salvage)",
                    f"  kept         {self.files_ok} result file(s)"]
        lines = [f"  repaired     damaged journal moved to {self.moved_to}; a new one was started"]
        for table, n in self.salvaged.items():
            lines.append(f"    salvaged {n} row(s) of {table}")
        for table, why in self.lost.items():
            lines.append(f"    could not salvage {table}: {why}")
        lines.append(f"  kept         {self.files_ok} result file(s)")
        return lines


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` now ((device, inode); None: none)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _check_journal(path: Path, report: DoctorReport) -> None:
    report.journal_file = _identity(path)  # (before opening it: a file replaced meanwhile differs)
    if report.journal_file is None:
        report.journal_problem = "journal.sqlite is missing"
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as e:
        report.journal_problem = f"{type(e).__name__}: {e}"
        return
    try:
        # The version first: a newer store is checked (and repaired, if need be) by the
        # nbflow that wrote it, whose schema this one does not know.
        report.schema_version = conn.execute("PRAGMA user_version").fetchone()[0]
        if report.schema_version > SCHEMA_VERSION:
            report.newer = True
            report.journal_problem = (
                f"schema version {report.schema_version}, written by a newer nbflow; this nbflow "
                f"writes schema {SCHEMA_VERSION} and cannot open it. Upgrade nbflow to open it; "
                "nothing was changed")
            return
        result = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if result != ["ok"]:
            report.journal_problem = "integrity check failed: " + "; ".join(map(str, result[:3]))
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


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})").fetchall()]


def _read_rows(src: sqlite3.Connection, table: str, cols: list[str],
               report: DoctorReport) -> list[tuple[Any, ...]]:
    """The rows of ``table`` that can be read; on damage part-way, the rows read before it
    (and the damage named in ``report.lost``)."""
    rows: list[tuple[Any, ...]] = []
    try:
        for row in src.execute(f"SELECT {', '.join(cols)} FROM {table}"):
            rows.append(row)
    except sqlite3.Error as e:
        report.lost[table] = (f"read {len(rows)} row(s), then {type(e).__name__}: {e}" if rows
                              else f"{type(e).__name__}: {e}")
    return rows


def _salvage(old: Path, new: Path, good_files: set[str], report: DoctorReport) -> None:
    try:
        src = sqlite3.connect(f"file:{old}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as e:
        report.lost["everything"] = f"{type(e).__name__}: {e}"
        return
    dst = sqlite3.connect(new, isolation_level=None)
    try:
        intact: set[str] = set()
        # cache rows are kept only for results that survive, so blobs must be read first
        for table in sorted(schema_tables(), key=lambda t: t == "cache"):
            try:
                # An older journal may lack a table or a column the new one has (migrations
                # only add): copy the columns both have.
                wanted = set(_columns(dst, table))
                cols = [c for c in _columns(src, table) if c in wanted]
            except sqlite3.Error as e:
                report.lost[table] = f"{type(e).__name__}: {e}"
                continue
            rows = _read_rows(src, table, cols, report) if cols else []
            if table == "blobs":
                k, i = cols.index("key"), cols.index("inline")
                rows = [r for r in rows
                        if (r[i] is not None and hashing.verify(r[i], r[k])) or r[k] in good_files]
                intact = {r[k] for r in rows}
            if table == "cache":
                b = cols.index("blob")
                rows = [r for r in rows if r[b] in intact]
            if not rows:
                continue
            before = dst.total_changes
            marks = ",".join("?" * len(cols))
            dst.execute("BEGIN")
            # OR IGNORE: the new journal's own rows (meta's schema version) win
            dst.executemany(f"INSERT OR IGNORE INTO {table}({', '.join(cols)}) VALUES({marks})", rows)
            dst.execute("COMMIT")
            if dst.total_changes > before:
                report.salvaged[table] = dst.total_changes - before
    finally:
        src.close()
        dst.close()


def _aside_name(path: Path) -> Path:
    """Where the damaged journal goes: ``journal.sqlite.damaged-<time>``, with a number added
    if a journal moved aside earlier (in the same second) is there, which must not be
    overwritten."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while any(Path(str(aside) + suffix).exists() for suffix in ("", "-wal", "-shm")):
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
        n += 1
    return aside


def _move_aside(path: Path, aside: Path, report: DoctorReport) -> None:
    """Move the journal the report diagnosed, and its ``-wal``/``-shm``, from ``path`` to
    ``aside`` (nothing, if it was missing).  Checked after the move (see the module):
    the file moved must be the one diagnosed, and no other process of this machine may
    have it open for writing; else it is put back and :class:`StoreInUse` raised."""
    if report.journal_file is None:
        return  # (missing when checked: a new journal is simply started)
    try:
        os.replace(path, aside)  # (the main file first: what was moved is checked before the rest)
    except FileNotFoundError:
        raise _replaced(path, report) from None
    if _identity(aside) != report.journal_file:  # another repair's new journal: not the damaged one
        _put_back(path, aside, [""], report)
        raise _replaced(path, report)
    moved = [""]
    for suffix in ("-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(aside) + suffix))
            moved.append(suffix)
    # Whoever has the moved file open now opened it before the move, maybe after the
    # check: it would commit into the file moved aside (its descriptor names it now).
    late = local_writers([aside])
    if late:
        _put_back(path, aside, moved, report)
        who = ", ".join(w.describe() for w in late)
        raise StoreInUse(
            f"nbflow doctor --repair: nothing was changed: the journal {path} was opened for "
            f"writing by {who} while it was being repaired. Moving it aside now would lose the "
            "rows they write. Stop them (shut down or restart those kernels, let their batch "
            "runs and scripts end), then run `nbflow doctor --repair` again.", report)


def _replaced(path: Path, report: DoctorReport) -> StoreInUse:
    return StoreInUse(
        f"nbflow doctor --repair: nothing was changed: the journal {path} was replaced while it "
        "was being repaired (by another `nbflow doctor --repair`?), so this one's diagnosis is "
        "of a file that is no longer there. Run `nbflow doctor` again to see the store as it "
        "is now.", report)


def _put_back(path: Path, aside: Path, suffixes: list[str], report: DoctorReport) -> None:
    """Move ``aside`` (and those of its ``suffixes`` moved) back to ``path``, never over a
    file made there meanwhile (a store opened while the name was free starts a new
    journal): then it stays aside, and the error says where."""
    for suffix in suffixes:
        src, dst = Path(str(aside) + suffix), Path(str(path) + suffix)
        try:
            os.link(src, dst)  # (fails if dst exists: os.replace would overwrite it)
        except FileExistsError:
            raise _made_meanwhile(src, dst, report) from None
        except OSError:  # (a file system without hard links: the name is checked, then taken)
            if dst.exists():  # (the same refusal: not the file system's own error)
                raise _made_meanwhile(src, dst, report) from None
            os.replace(src, dst)
            continue
        os.unlink(src)


def _made_meanwhile(src: Path, dst: Path, report: DoctorReport) -> StoreInUse:
    return StoreInUse(
        f"nbflow doctor --repair: stopped: {dst} was made by another process while the "
        f"repair had moved it to {src}, and is left as it is; {src} was not put back. "
        "Stop the processes that use the store, then run `nbflow doctor` again.", report)


def repair(home: str | os.PathLike[str]) -> DoctorReport:
    """Diagnose; if the journal is damaged, move it aside and start a new one, salvaging
    what can be read (see the module docstring).  A healthy store, or one written by a newer
    nbflow (``report.newer``), is left exactly as it is.

    Raises :class:`~nbflow.store.inuse.StoreInUse` (``.report``: the diagnosis), changing
    nothing, while another process has the journal open for writing (see :mod:`.inuse`)."""
    report = diagnose(home)
    if report.newer:
        report.repair_refused = True
    if report.journal_ok or report.newer:
        return report
    path = report.home / "journal.sqlite"
    # Right before the move (the checks above can take long): a process writing to the old
    # file would go on writing to it once it is moved aside, and its rows would be lost.
    refuse_if_written(path, report)
    aside = _aside_name(path)
    _move_aside(path, aside, report)
    if report.journal_file is not None:  # (missing when diagnosed: nothing was moved)
        report.moved_to = aside
    Journal(path).close()  # a new, empty journal at the current schema
    report.started_new = True
    good = {k for k, *_ in BlobStore(report.home).files() if k is not None} - set(report.files_corrupt)
    if report.moved_to is not None:
        try:
            _salvage(aside, path, good, report)
        except sqlite3.Error as e:  # (the new journal itself failed: said, not hidden)
            report.lost["the rest"] = f"{type(e).__name__}: {e}"
    from .store import _BROKEN, _LOCK

    with _LOCK:  # this process may use the store again
        _BROKEN.pop(report.home, None)
    return report
