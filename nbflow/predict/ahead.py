"""A run's history questions, asked before the run: after the previous run of the same graph.

Preparing a run (:func:`nbflow.workflow.prepare`) asks the journal about the workflow's
recent runs before anything can start: the mean durations and output sizes by task and
by key (learned priorities, placement), whether there is any history
(:func:`nbflow.store.recent.has_history`), whether an attempt recorded a peak that
memory admission could demand and, when one did, the peaks grouped by task (:mod:`.memory`:
on a cluster a worker's resident set often passes the bound).  On a short Dask run these reads are
most of the preparation: four statements over ~20 runs, on a connection whose page cache
the journal's last commit emptied, in the caller's thread while nothing else can run.

The same graph run again asks the same questions, and the previous run's last rows are
committed well before then.  So each preparation names its graph (:func:`want`: the last
:data:`KEPT_GRAPHS` graphs prepared on a store are kept), and once a run's rows are all
committed (a Dask run's end-of-run read journals its transfer rows and lets the journal's
writer go, in its own thread, after the caller has its results:
:class:`nbflow.store.hooks.TransferSink`), :func:`read_ahead` asks those graphs' questions
there, on a connection kept for it, and keeps the answers: the run's own graph's, and
those of the graphs prepared before it, which its rows would otherwise have left stale.
Runs back to back (a loop of ``wf.run()``) prepare the next run while the previous one's
end-of-run work is still going: a read ahead whose run was followed by another
preparation on the store reads nothing (:func:`preparing`: that run's rows would make it
stale before anyone could use it; ``benchmarks/back_to_back.py``).
A preparation uses them only if they are still the journal's answers (:func:`use`):

* the journal's file is the one they were read from (its device and inode);
* nothing was committed since, by any connection: this process's queued rows are
  committed first (as every read of the journal does), then SQLite's
  ``PRAGMA data_version`` on the kept connection, unchanged since just before the
  questions were read, says no other connection committed since then (this process's
  journal writer is another connection too), so every read saw what is there now;
* the questions are the same: the workflow, the graph's keys (in node order), the window
  of runs; the run left out (the new run's id) is not among the newest runs they looked at
  (then leaving it out changes nothing).  Columns that were not read ahead (sizes, for a
  graph last prepared on threads) are read by the preparation; so are the peaks by task
  when its bound (``NBFLOW_PREDICTED_MEMORY_MIN``) is below the one they were read for
  (for a higher bound they are filtered: its tasks are among them, with the same attempts).

Then the answers are exactly what the reads would return now (they are those reads, on
the same database), and the preparation is told them
(:func:`nbflow.store.recent.tell`) instead of asking.  Otherwise it reads as before.
``with off():`` switches this off (the benchmarks' before/after).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sqlite3
import sys
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nbflow.store import recent

from . import memory

__all__ = ["KEPT_GRAPHS", "KEPT_JOURNALS", "LARGEST_GRAPH", "off", "preparing", "read_ahead", "use",
           "want"]

LARGEST_GRAPH = 2_000  # nodes: a larger graph's questions are not read ahead (keys compared)


@dataclass(frozen=True)
class _Answers:
    """One graph's answers, read ahead."""

    newest: frozenset[str]  # the runs the window held (the newest RECENT_RUNS)
    means: dict[str, tuple[dict[str, float], dict[str, float]]]
    any_history: bool
    largest_peak: Any
    # (bound, memory.peaks_at_least(bound)) when the largest peak reaches the bound a
    # preparation uses (memory admission then groups the peaks by task), else None
    peaks: tuple[float, dict[str, tuple[float, float]]] | None


Graph = tuple[str, tuple[str, ...]]  # (workflow, its node keys in order)


class _Slot:
    """A journal's kept connection for reading ahead, and the last answers read on it."""

    def __init__(self, conn: sqlite3.Connection, file: tuple[int, int]) -> None:
        self.conn = conn
        self.file = file
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.answers: dict[Graph, _Answers] = {}
        self.version = -1  # PRAGMA data_version on the connection when they were read
        # (while a graph's questions are read: {(statement, params): rows}.  The window's
        # runs are asked by the read-ahead and by the means with the same statement; a
        # commit between the two would change data_version since the version read before
        # them, and the answers would not be used, so the first rows are the second's too)
        self.memo: dict[tuple[str, tuple[Any, ...]], list[tuple[Any, ...]]] | None = None

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """(As ``Journal.query``, on this connection: the reads go through ``_Through``.)"""
        if self.memo is None:
            return self.conn.execute(sql, params).fetchall()
        key = (sql, tuple(params))
        rows = self.memo.get(key)
        if rows is None:
            rows = self.memo[key] = self.conn.execute(sql, params).fetchall()
        return list(rows)


class _Through:
    """A store whose journal reads through a slot's connection (for recent's and memory's
    reads, which ask ``store.journal.query``)."""

    def __init__(self, slot: _Slot) -> None:
        self.journal = slot


# journal -> slot, the most recently read ahead last; at most KEPT_JOURNALS (a process that
# used many stores keeps no connection to the older ones)
_slots: dict[Any, _Slot] = {}
_slots_lock = threading.Lock()
KEPT_JOURNALS = 4
# journal -> the graphs prepared last ({graph: columns read together}, the latest last), whose
# questions are read ahead; at most KEPT_GRAPHS per journal
_graphs: dict[Any, dict[Graph, tuple[str, ...]]] = {}
KEPT_GRAPHS = 3
# journal -> preparations on it so far (see preparing; a weak key: a store dropped, its count
# goes with it)
_prepared: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_state = {"on": True, "exiting": False}


@contextlib.contextmanager
def off() -> Iterator[None]:
    """Within the block (every thread) no preparation uses what was read ahead, nor asks
    for its graph to be read ahead: each reads its history itself.  (The graphs asked for
    before are still read ahead when :func:`read_ahead` is called.)"""
    was = _state["on"]
    _state["on"] = False
    try:
        yield
    finally:
        _state["on"] = was


def _file(path: Any) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _slot(journal: Any) -> _Slot | None:
    """The journal's slot, its connection opened on first use (None: cannot be read)."""
    with _slots_lock:
        slot = _slots.pop(journal, None)
        file = _file(journal.path)
        if slot is not None and slot.pid == os.getpid() and slot.file == file:
            _slots[journal] = slot  # (now the most recent)
            return slot
        gone = [slot] if slot is not None else []
        made = None
        if file is not None:
            made = _slots[journal] = _Slot(journal.reader(), file)
        while len(_slots) > KEPT_JOURNALS:
            gone.append(_slots.pop(next(iter(_slots))))
    for old in gone:
        if old.pid == os.getpid():  # (a forked child never closes its parent's)
            _close(old)
    return made


def _close(slot: _Slot) -> None:
    with slot.lock, contextlib.suppress(sqlite3.Error):
        slot.conn.close()


def _version(slot: _Slot) -> int:
    return int(slot.conn.execute("PRAGMA data_version").fetchone()[0])


def want(store: Any, workflow: str, keys: list[str], together: tuple[str, ...] = ()) -> None:
    """A run of this graph (``workflow``, node ``keys``) is being prepared: read its
    questions ahead from now on, whenever :func:`read_ahead` is called (for the last
    :data:`KEPT_GRAPHS` graphs of the store).  ``together``: the columns its preparation
    reads in one pass (durations alone without)."""
    if not _state["on"] or store is None or len(keys) > LARGEST_GRAPH:
        return
    graph = (workflow, tuple(keys))
    with _slots_lock:
        graphs = _graphs.pop(store.journal, None) or {}
        _graphs[store.journal] = graphs  # (the latest store last)
        graphs.pop(graph, None)
        graphs[graph] = tuple(together) or ("duration_s",)
        while len(graphs) > KEPT_GRAPHS:
            graphs.pop(next(iter(graphs)))
        while len(_graphs) > KEPT_JOURNALS:
            _graphs.pop(next(iter(_graphs)))


def preparing(store: Any) -> int:
    """A run is being prepared on ``store`` (every preparation, read ahead on or off): the
    number of preparations on its journal so far, this one included, for
    :func:`read_ahead`'s ``prepared``."""
    if store is None:
        return 0
    with _slots_lock:
        n = _prepared[store.journal] = _prepared.get(store.journal, 0) + 1
    return n


def read_ahead(store: Any, prepared: int | None = None) -> None:
    """Ask now the history questions of the graphs last prepared on ``store``
    (:func:`want`), and keep the answers for :func:`use` (see the module doc).  Call it
    once this process's rows are committed (a run's last ones); it never raises (a failure
    only means the next preparation reads for itself).

    ``prepared``: :func:`preparing`'s count for the run whose rows these are.  If another
    run was prepared on the store since, nothing is read: that run is under way (runs back
    to back: the end-of-run work of one overlaps the next one's start), its rows will make
    the answers stale before any preparation could use them, and its own end reads ahead
    again (a Dask run's) or the preparation after it reads for itself."""
    if sys.is_finalizing() or _state["exiting"]:
        return
    try:
        with _slots_lock:
            if prepared is not None and _prepared.get(store.journal, 0) != prepared:
                return
            graphs = list((_graphs.get(store.journal) or {}).items())
        if not graphs:
            return
        slot = _slot(store.journal)
        if slot is None:
            return
        through = _Through(slot)
        with slot.lock:
            slot.answers = {}
            # (the version before the reads: if it is still the connection's when they are
            # used, nothing was committed since it was read, so every read saw what is there)
            before = _version(slot)
            try:
                answers = {}
                for graph, cols in reversed(graphs):  # (the latest first)
                    slot.memo = {}
                    answers[graph] = _read(slot, through, graph[0], list(graph[1]), cols)
            finally:
                slot.memo = None
            slot.answers, slot.version = answers, before
    except Exception:  # (reading ahead is an extra: the next preparation reads for itself)
        return


def _read(slot: _Slot, through: _Through, workflow: str, keys: list[str],
          cols: tuple[str, ...]) -> _Answers:
    """One graph's questions, asked through the slot's connection as a preparation asks
    them (with no run left out: the next run is not in the journal yet)."""
    newest = frozenset(r[0] for r in slot.query(recent._RUNS_SQL, (workflow, "", recent.RECENT_RUNS)))
    means = recent.read_means(through, cols, workflow, "", recent.RECENT_RUNS, keys)
    # (a mean duration comes from a completed attempt that ran, in some of the window's
    # runs: what has_history looks for, so it is True; a preparation asks it only when no
    # duration is named (nbflow.workflow._has_history), and then it is read here)
    any_history = bool(any(means.get("duration_s", ({}, {})))
                       or recent.has_history(workflow, "", store=through))
    args = (workflow, "", memory.RECENT_RUNS)
    largest = memory.largest_peak(through, args)
    peaks = None
    bound = memory.min_bytes()
    if largest is not None and largest >= bound and os.environ.get("NBFLOW_PREDICTED_MEMORY", "1") != "0":
        peaks = (bound, memory.peaks_at_least(through, args, bound, every_row=True))
    return _Answers(newest, means, any_history, largest, peaks)


def use(store: Any, workflow: str, exclude_run: str, keys: list[str]) -> bool:
    """Inside a run's preparation (a ``one_answer_per_query`` block): if what was read ahead
    for this graph is still the journal's answer (see the module doc), tell the block's
    readers; True if it did."""
    if not _state["on"] or store is None or len(keys) > LARGEST_GRAPH:
        return False
    journal = store.journal
    slot = _slots.get(journal)
    if slot is None or slot.pid != os.getpid():
        return False
    graph = (workflow, tuple(keys))
    got = slot.answers.get(graph)
    if got is None or exclude_run in got.newest:
        return False
    try:
        journal.flush()  # (what the reads would have committed first: a commit is a change)
        if not slot.lock.acquire(blocking=False):  # (being read ahead right now: read as before)
            return False
        try:
            if (slot.answers.get(graph) is not got or _file(journal.path) != slot.file
                    or _version(slot) != slot.version):
                return False
        finally:
            slot.lock.release()
    except Exception:  # (an unreadable store: the preparation's own reads say what it is)
        return False
    recent.tell_means(store, workflow, exclude_run, recent.RECENT_RUNS, keys, got.means)
    recent.tell(("has_history", workflow, exclude_run, id(store)), got.any_history)
    recent.tell(("largest peak", workflow, exclude_run, memory.RECENT_RUNS, id(store)), got.largest_peak)
    if got.peaks is not None:
        recent.tell(("peaks by task", workflow, exclude_run, memory.RECENT_RUNS, id(store)), got.peaks)
    return True


@atexit.register
def _close_all() -> None:
    """(Before the journals close at exit, registered earlier: the last connection to a
    journal folds its WAL into the file; nothing is read ahead after this.)"""
    _state["exiting"] = True
    with _slots_lock:
        slots = list(_slots.values())
        _slots.clear()
    for slot in slots:
        if slot.pid == os.getpid():
            _close(slot)
