"""What the store gives a run: its result cache and its journal subscriber.

Both are asked for by the composition point (:mod:`nbflow.workflow`) when a run is made:

* :func:`run_cache` — the run's :class:`~nbflow.store.cache.RunCache`, or None when no
  store is usable.  The scheduler keeps it in one attribute and calls it only when it is
  not None, so a run without a cache pays one attribute check per task.  With leases on
  (:mod:`.lease`) the cache also listens to the run's events, to give up the lease of a
  task that ends without a result; and the store's file-digest memo (:mod:`.filememo`) is
  installed, so that ``nf.File`` digests survive the process.
* :func:`journal_subscriber` — a :class:`~nbflow.store.recorder.RunRecorder` that writes the
  run's events to the journal, or None when no store is usable (whether or not the run
  caches).
* :func:`summary_subscriber` — a :class:`~nbflow.store.summary.SummaryWriter` that sums
  the run's measured columns per task as it ends (read by the next run's preparation), or
  None when no store is usable.
* :func:`transfer_sink` — a function that journals the rows of ``run.transfers`` (the
  locality room calls it once: before the run's end is recorded when the run closes its
  Dask client, else just after the run returned, off its path), or None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.events import Subscriber
from . import hashing, settings
from .cache import RunCache
from .filememo import file_memo
from .guard import GuardedRunCache
from .journal import Op
from .recorder import RunRecorder
from .store import Store, get_store
from .summary import SummaryWriter

PUT_TRANSFER = Op("INSERT INTO transfers(run_id, producer, consumer, from_worker, to_worker, bytes, "
                  "seconds, start) VALUES(?,?,?,?,?,?,?,?)")


_LOOK = object()  # (a hook's ``store`` not given: found as the run's preparation finds it)


def run_store() -> Store | None:
    """The store a run being prepared uses (None: no usable store), after checking the
    ``NBFLOW_*`` settings (a bad one is refused before the run, not in a thread).  The
    composition point asks once and hands the answer to every hook and history read:
    finding the store walks the folders above the working directory."""
    settings.check_all()
    return get_store()


def run_cache(run: Any, store: Any = _LOOK) -> RunCache | None:
    """The result cache of ``run`` (None: no usable store).  ``run`` is an engine Run;
    ``store``: :func:`run_store`'s answer, if the caller has it.

    Store failures during the run degrade it to "no cache" (:mod:`.guard`)."""
    if store is _LOOK:
        store = run_store()
    if store is None:
        return None
    hashing.FILES.persistent = file_memo(store)  # file digests outlive this process
    options = getattr(run, "options", None)  # (lease=, lease_ttl=: None leaves it to NBFLOW_LEASE*)
    cache = GuardedRunCache(store, run_id=run.id, workflow=run.workflow, strict=run.strict,
                            rerun=run.rerun, lease=getattr(options, "lease", None),
                            lease_ttl=getattr(options, "lease_ttl", None))
    if cache.leases is not None:
        run.subscribe(cache.on_event)  # a task that ends without a result gives up its lease
    return cache


def journal_subscriber(run: Any, store: Any = _LOOK) -> Subscriber | None:
    """The journal's subscriber for ``run`` (None when no store is usable)."""
    if store is _LOOK:
        store = run_store()
    return RunRecorder(store, run) if store is not None else None


def summary_subscriber(run: Any, store: Any = _LOOK) -> Subscriber | None:
    """The subscriber queueing ``run``'s per-task summary at its end (None: no store)."""
    if store is _LOOK:
        store = get_store()
    return SummaryWriter(store.journal, run) if store is not None else None


def transfer_sink(run: Any, store: Any = _LOOK) -> TransferSink | None:
    """``sink(rows)`` journaling ``run.transfers`` rows (dicts), or None with no store."""
    if store is _LOOK:
        store = get_store()
    return TransferSink(store.journal, run.id) if store is not None else None


class TransferSink:
    """Journals a run's transfer rows; ``hold()``/``release()`` keep the journal's writer
    thread alive in between (a read after the run's end: see ``LocalityAgent.closing``).

    ``ahead``: called once the released rows are committed (``release``), in the thread
    that releases them (the end-of-run read's, after the caller has its results): the
    run's rows are all in the journal then, and nothing waits for that thread, so the
    composition point asks the next run's history questions there
    (:func:`nbflow.predict.ahead.read_ahead`)."""

    __slots__ = ("ahead", "journal", "run_id")

    def __init__(self, journal: Any, run_id: str) -> None:
        self.journal = journal
        self.run_id = run_id
        self.ahead: Callable[[], None] | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        run_id = self.run_id
        self.journal.put_many(PUT_TRANSFER, [
            (run_id, r["producer"], r["consumer"], r["from_worker"], r["to_worker"], r["bytes"],
             r["seconds"], r["start"]) for r in rows])
        # (called after the run has returned when the client stays open: once the rows are
        # settled they are committed, so a reader of the journal sees them)
        self.journal.flush()

    def hold(self) -> None:
        """Rows will come after the run's end: the writer waits for them (as for a run)."""
        self.journal.run_started()

    def release(self) -> None:
        """They came (or never will): commit them; the writer exits if nothing else runs.
        Then ``ahead()``, if given (once)."""
        self.journal.run_finished()
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            ahead()


def stored_transfers(run_id: str) -> list[tuple[Any, ...]]:
    """The journaled transfer rows of a run (for reports of past runs)."""
    store = get_store()
    if store is None:
        return []
    conn = store.journal.reader()
    try:
        return conn.execute(
            "SELECT producer, consumer, from_worker, to_worker, bytes, seconds, start "
            "FROM transfers WHERE run_id = ? ORDER BY start", (run_id,)).fetchall()
    finally:
        conn.close()
