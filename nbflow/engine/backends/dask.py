"""Sync tasks on a Dask cluster through ``distributed``, with results left on the workers.

``backend="dask"`` starts a temporary ``LocalCluster`` for the run and closes it after;
``backend="tcp://host:port"`` connects to a running scheduler (and disconnects after);
a ``distributed.Client`` is used as is and left open.  Functions and arguments travel with
cloudpickle (Dask's own serialisation), so notebook-defined functions work.  Each attempt is
submitted under a unique key with ``pure=False``, so Dask never merges two calls.
Cancelling the run cancels the submitted futures.

**Results stay remote.**  A finished task's result is not brought to this process: the
backend returns a :class:`DaskResult` (a :class:`~nbflow.core.remote.Remote` holding the
Dask future, the worker that holds the data and its size as Dask measured it).  When a
later Dask task takes it as an argument, the future itself is submitted, so Dask moves the
data worker to worker, and only if the consumer runs elsewhere.  The value comes here only
when asked for (see :mod:`nbflow.core.remote`).  Because the futures are kept, Dask knows
each result's lineage: a result lost with its worker is recomputed by the cluster.

Large local values (a cached input, a value the notebook passed) are scattered to the
cluster once per run, not once per consumer.  A run whose cluster closes with it (a
temporary ``LocalCluster``, or a client made from an address) brings the results still
remote here before it closes, so that ``run[ref]`` keeps working; pass a
``distributed.Client`` to keep them on the cluster after the run.

**What the caller takes at the end comes with the end.**  A client that stays open keeps
the results, yet a ``%%workflow`` binding's, and a small result of a sink the notebook
names, are gathered as the run closes, on the client's loop, while the run's last rows are
committed (:meth:`DaskBackend._to_prefetch`; counted in ``client_bytes`` and
``prefetched``), each straight from the worker that holds it; the end-of-run read waits
for them, and for the caller to take them (:mod:`.dask_brought`).  Such a result that
pickles to at most 1 KiB needs no gather: its worker sends it with the task's completion
(:meth:`DaskBackend._carry_limit`).  Nothing else comes.

**No round trip per dependency.**  Dependents are submitted ahead of their inputs with the
producers' futures (:mod:`.dask_ahead`), and nbflow's scheduler plugin tells where each
result is, its size and its seconds, the completions of one turn of the scheduler's loop in
one event (:mod:`.dask_plugin`; without the plugin each worker announces its own results on
an event topic just before the task completes: :func:`_apply_located`), so the engine learns
it without asking the scheduler (it asks, batched, when the news is late).

A :class:`~nbflow.core.protocols.DataPlacement` (the locality room's) may be attached: it
chooses the worker for each task (sent as ``workers=[...]`` with
``allow_other_workers=True``: a hint Dask may override to balance load), learns where
every result lives, and reads the cluster's transfer logs: before the client closes, or,
when the client stays open, just after the run (off its path).

**Few messages, few hand-offs.**  What the backend submits in one turn of the run's event
loop goes to the scheduler as one message, each task with its own placement hint
(:mod:`.dask_batch`), and the run's first submission takes every other ready Dask task with
it (:mod:`.dask_ahead`); completions come back from Dask's client loop to the run's loop
with one hand-off, a burst of them in one wake-up (:mod:`.dask_watch`).
``NBFLOW_DASK_BATCH=0`` goes back to one ``client.submit`` and one done-callback per task.

**Results released once consumed.**  Depending on the placement's ``keep=`` (see
:mod:`nbflow.locality.reachable`), an input is released from the cluster once every task
taking it has run (:meth:`DaskBackend._release`); ``run[ref]`` on it then raises
:class:`~nbflow.core.errors.ResultReleased`.  When every task taking a result is already on
the cluster as it completes, the result is handed over to Dask's scheduler at once
(:meth:`DaskBackend._hand_over`), which frees it after the last of them, as it frees an
intermediate of ``dask.delayed``.

**Intermediates nobody holds.**  A result that would be handed over the moment it
completes is decided on before it runs, as its batch is sent (:meth:`DaskBackend._unheld`):
it is sent without a future this process holds, so, as for an intermediate of
``dask.delayed``, the scheduler never reports it here, nothing is released later, and Dask
frees it right after its last consumer.  The engine learns its completion, worker, size
and seconds from the completion event alone (:mod:`.dask_watch` hands the
announcement over like a completion); a failure, which sends no announcement, is noted on
the same topic by nbflow's scheduler plugin (:mod:`.dask_plugin`), after which the key is
held to read its error and traceback.  Without that plugin (a scheduler that cannot import
nbflow), or with ``NBFLOW_DASK_HOLD_ALL=1``, every result is held as before.

**When tasks ran, and news of them at once.**  Each call is timed on its worker with the
worker's wall clock; the times come with the completion and are read in this process's
clock (:mod:`.dask_clock`), and the engine records them as the task's start and end
(``Remote.ran``).  A task sent ahead that finished before the engine started it is taken
in as soon as the completion arrives, without waiting for an engine slot
(:meth:`DaskBackend._finished_ahead`, :meth:`DaskBackend.done_ahead`; ``live``).

**Fixed costs per run.**  The cluster's workers are asked of the scheduler once per
client (:func:`cluster_workers`), and the announcement topic is subscribed once per
client, so a run on a client that earlier runs used starts submitting without a round
trip.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import anyio

from ...core.errors import InvalidOptionError, ResultReleased, WorkerLost
from ...core.remote import Remote, remotes_in
from ...core.sizes import cheap_size, dask_size
from ...core.states import COMPLETED
from ..metrics import Measured, _peak_rss
from . import dask_batch, dask_brought, dask_cache, dask_clock, dask_recovery, dask_watch
from .dask_ahead import Ahead

SCATTER_MIN = 64 * 1024  # local arguments at least this big are scattered once per run
PREFETCH_BYTES = 64 * 1024  # default of NBFLOW_DASK_PREFETCH (see DaskBackend._to_prefetch)
# A result the caller takes as the run ends comes with its completion itself when its
# pickle is at most this big (see DaskBackend._carry_limit): it travels in the facts the
# scheduler plugin relays, and the scheduler keeps its last 1000 events per topic, so
# this stays small.
CARRY_BYTES = 1024


def prefetch_limit() -> int:
    """Bytes up to which a named sink's result is brought here as the run ends
    (``NBFLOW_DASK_PREFETCH``; 0 switches that off; a binding's result comes regardless)."""
    raw = os.environ.get("NBFLOW_DASK_PREFETCH", "").strip()
    if not raw:
        return PREFETCH_BYTES
    try:
        return max(0, int(raw))
    except ValueError:
        raise InvalidOptionError(
            f"NBFLOW_DASK_PREFETCH={raw!r} is not a number of bytes; set it to an integer "
            f"(0 switches prefetching named results off; default {PREFETCH_BYTES})") from None


def _apply(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> Any:
    return fn(*args, **kwargs) if kwargs else fn(*args)


def _carried(value: Any, limit: int) -> bytes | None:
    """On a worker: ``value`` pickled as Dask pickles what it sends (pickle, else
    cloudpickle), when that is at most ``limit`` bytes; else None.  Dask's own measure of
    the value is asked first, so a large value is never pickled here."""
    try:
        from dask.sizeof import sizeof
        from distributed.protocol.pickle import dumps

        if sizeof(value) > limit:
            return None
        blob = dumps(value)
    except Exception:  # (a value that does not pickle: it is gathered as before)
        return None
    return blob if isinstance(blob, bytes) and len(blob) <= limit else None


def _note_metrics(cpu_s: float, began: float, ended: float,
                  carry: bytes | None = None) -> tuple[float, int | None]:
    """On a worker: the task's CPU seconds, the process's peak RSS, and when the call began
    and ended (the worker's wall clock), put in the metadata Dask keeps of the running
    task, which its ``task-finished`` message carries to the scheduler, whose nbflow plugin
    sends them with the task's completion.  A result that stays on its worker cannot carry
    them in a :class:`Measured` envelope (the consumers would receive the envelope), so
    this is how they reach the journal.  ``carry``: the value itself, pickled, for the
    client to take with the completion (see ``DaskBackend._carry_limit``).  Returns (CPU
    seconds, peak RSS)."""
    peak = _peak_rss()
    facts: tuple[Any, ...] = (cpu_s, peak, began, ended)
    if carry is not None:
        facts += (carry,)
    try:
        from distributed import get_worker

        w = get_worker()
        ts = w.state.tasks.get(w.get_current_task())
        if ts is not None:
            ts.metadata[dask_recovery.METRICS] = facts
    except Exception:  # (not on a worker: nothing to note it on)
        pass
    return cpu_s, peak


def _apply_located(topic: str | None, fn: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any] | None, carry: int = 0) -> Any:
    """:func:`_apply`, then tell the client (an event on ``topic``) where the result is,
    its size as Dask measures it, and the call's seconds.  The event travels on the same
    worker -> scheduler -> client streams as the task's completion, just before it, so the
    client usually knows where a result lives when it learns the task finished, without
    asking the scheduler (when it does not, it asks: see ``DaskBackend._where``).

    ``topic`` None: the bare call.  nbflow's scheduler plugin then sends the same facts,
    every completion of a turn of the scheduler's loop in one event (:mod:`.dask_plugin`),
    and the worker announces nothing (the default when the plugin is there).  ``carry``
    (bytes, with the plugin): the value goes with those facts too when its pickle is no
    bigger (see ``DaskBackend._carry_limit``)."""
    t0, c0 = time.perf_counter(), time.thread_time()  # (the task runs on this one thread)
    began = time.time()  # (when the call ran, in the worker's clock: see dask_clock)
    try:
        value = fn(*args, **kwargs) if kwargs else fn(*args)
    except BaseException as e:  # (a failed call is timed too: on its error, dask_clock)
        dask_clock.note_failure(e, began, time.time())
        raise
    ended = time.time()
    cpu_s, peak = _note_metrics(time.thread_time() - c0, began, ended,
                                _carried(value, carry) if carry else None)
    if topic is None:
        return value
    seconds = time.perf_counter() - t0
    try:
        from dask.sizeof import sizeof
        from distributed import get_worker

        w = get_worker()
        w.log_event(topic, {"key": w.get_current_task(), "worker": w.address,
                            "nbytes": int(sizeof(value)), "seconds": seconds,
                            "cpu_s": cpu_s, "peak_rss": peak, "start": began, "stop": ended})
    except Exception:  # (not on a worker, or an unsized value: the client asks instead)
        pass
    return value


def _apply_quiet(topic: str, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any] | None) -> Any:
    """:func:`_apply_located` without the announcement, for a wrapper that passes the topic
    on for its own events (the cache's work in tasks: :mod:`.dask_cache`).  The call's
    metrics and times are noted as without the wrapper (the plugin sends them)."""
    return _apply_located(None, fn, args, kwargs)


Located = tuple[str | None, int | None, float | None, tuple[str, ...]]


def _locate(dask_scheduler: Any, key: str) -> Located:
    """On the scheduler: which worker holds ``key``, its size in bytes, the average compute
    time of tasks of its kind (what Dask measured on the workers; None: unknown), and every
    worker holding it (a consumer elsewhere may already have fetched a copy)."""
    ts = dask_scheduler.tasks.get(key)
    if ts is None:
        return None, None, None, ()
    holders = sorted(ws.address for ws in ts.who_has or ())
    avg = getattr(getattr(ts, "prefix", None), "duration_average", -1)
    return ((holders[0] if holders else None), (int(ts.nbytes) if ts.nbytes >= 0 else None),
            (float(avg) if avg is not None and avg >= 0 else None), tuple(holders))


def _locate_many(dask_scheduler: Any, keys: list[str]) -> dict[str, Located]:
    """:func:`_locate` for many keys in one call to the scheduler."""
    return {k: _locate(dask_scheduler, k) for k in keys}


def _apply_to(value: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return fn(value, *args)


# one event topic for every run (the scheduler keeps a bounded log per topic)
TOPIC = dask_recovery.UNWANTED_TOPIC
# run tag -> its backend, for the announcements of its tasks (their Dask keys carry the tag)
_announced_to: weakref.WeakValueDictionary[str, DaskBackend] = weakref.WeakValueDictionary()


def _on_located(event: tuple[float, dict[str, Any]]) -> None:
    """A worker announced a result, or nbflow's scheduler plugin sent the completions of
    one turn of its loop (runs in the client's thread): file each with its run.  A task's
    start and stop on its worker, when told, are filed in this process's clock
    (:mod:`.dask_clock`)."""
    msg = event[1]
    now = time.time()
    done = msg.get("done")
    if done is not None:  # [[key, worker, nbytes, seconds, metrics, start, stop], ...] (dask_plugin)
        for key, worker, nbytes, seconds, *more in done:
            parts = key.rsplit("-", 2)  # "<task key>-<run tag>-<attempt number>"
            backend = (_announced_to.get(parts[1])
                       if len(parts) == 3 and parts[2].isdigit() else None)
            if backend is None or key in backend._located or key in backend._announced:
                continue  # (another client's, a helper task's, or recomputed: the first stands)
            facts = more[0] if more else None  # (cpu s, peak RSS, start, stop[, value]): _note_metrics
            if facts is not None and len(facts) >= 5 and type(facts[4]) is bytes:
                backend._carried[key] = facts[4]  # (the value itself: see _carry_limit)
            span = None
            # when it ran: the worker's own times, else Dask's (see dask_clock)
            if facts is not None and len(facts) >= 4:
                span = backend.clock.span(worker, facts[2], facts[3], now)
            elif len(more) == 3:  # (a plugin of session 9 sends neither)
                span = backend.clock.span(worker, more[1], more[2], now)
            if facts is not None and len(facts) > 2:
                facts = facts[:2]
            backend._located[key] = (worker, nbytes, seconds, facts, span)
            backend.news.set()
            watcher = backend._watcher
            if watcher is not None:
                watcher.announced(key)
        return
    key = str(msg.get("key", ""))
    parts = key.rsplit("-", 2)  # "<task key>-<run tag>-<attempt>"
    backend = _announced_to.get(parts[1]) if len(parts) == 3 else None
    if backend is not None:
        if "prepared" in msg:  # what the task did for the cache (dask_cache), not a place
            if backend.in_task is not None:
                backend.in_task.told(key, msg["prepared"])
            return
        if msg.get("erred"):  # the scheduler's note: a task no client holds failed
            backend._erred.add(key)
        elif msg.get("dropped"):  # the scheduler's note: dropped before it produced a result
            backend._dropped.add(key)
        elif key in backend._located or key in backend._announced:
            return  # (recomputed after its worker died: the first announcement stands)
        else:
            span = None
            if "start" in msg:
                span = backend.clock.span(msg["worker"], msg["start"], msg["stop"], now)
            backend._located[key] = (msg["worker"], msg["nbytes"], msg["seconds"],
                                     (msg["cpu_s"], msg["peak_rss"]) if "cpu_s" in msg else None,
                                     span)
        backend.news.set()
        watcher = backend._watcher
        if watcher is not None:
            watcher.announced(key)


# client -> (the cluster's shape when asked, its workers): see cluster_workers
_workers_of: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], dict[str, Any]]] = (
    weakref.WeakKeyDictionary())
_subscribed: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # client -> scheduler id


def _shape(identity: Any) -> tuple[Any, ...]:
    ident = identity or {}
    return ident.get("id"), ident.get("n_workers"), ident.get("total_threads")


def known_workers(client: Any) -> dict[str, Any] | None:
    """The workers of ``client``'s cluster as last asked (None: never asked, or the cluster
    changed since).  No round trip: the client refreshes a summary of the scheduler's
    identity by itself every few seconds (its id, worker and thread counts), and the
    answer is reused while that summary is unchanged."""
    got = _workers_of.get(client)
    if got is None or got[0] != _shape(getattr(client, "_scheduler_identity", None)):
        return None
    return got[1]


def cluster_workers(client: Any) -> dict[str, Any]:
    """``{address: Dask's worker info (nthreads, resources, memory_limit, ...)}``: asked of
    the scheduler once per client and cluster shape (see :func:`known_workers`), so runs
    after the first on one client start without that round trip."""
    got = known_workers(client)
    if got is not None:
        return got
    info = client.scheduler_info()
    workers = dict(info.get("workers") or {})
    _workers_of[client] = (_shape(info), workers)
    return workers


def _same_dir(path: str, ident: tuple[int, int]) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == ident


class DaskResult(Remote):
    """A result held by a Dask worker (see :class:`~nbflow.core.remote.Remote`)."""

    __slots__ = ("__weakref__", "backend", "dask_key", "future", "prefetch")

    def __init__(self, key: str, future: Any, backend: DaskBackend, nbytes: int | None,
                 worker: str | None, dask_key: str = "") -> None:
        super().__init__(key, nbytes, worker)
        self.future = future
        self.dask_key = future.key if future is not None else dask_key  # (kept once released)
        self.backend = backend
        # The gather started as the run ended, for a result the caller will ask for
        # (DaskBackend._prefetch): a concurrent.futures.Future of [value]; None: none.
        self.prefetch: Any = None
        # (compute_s, from Remote: the call's seconds as its worker measured them, which
        # the engine records as the task's duration: it may learn of the completion later
        # than it happened, the scheduler plugin's window, see dask_plugin.)

    def _fetch(self) -> Any:
        released = self.backend.released_keys.get(self.key)
        pending = self.prefetch
        if pending is not None:  # (its bytes were counted as they came: _prefetched)
            try:
                value = pending.result()[0]
            except Exception:  # (lost, or failed: asked again below, as without it)
                pass
            else:
                self.backend.fetched.append((self.key, self.nbytes))
                return value
        if self.future is None and released:
            raise ResultReleased(_released_message(self.key, released))
        if self.future is None:
            raise RuntimeError(f"the result of {self.key} was lost when its cluster closed")
        value = self.future.result()
        self.backend.client_bytes += self.nbytes or 0
        self.backend.fetched.append((self.key, self.nbytes))
        return value

    def on_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        client = self.backend.client
        hint = [self.worker] if self.worker else None
        fut = client.submit(_apply_to, self.future, fn, args, pure=False, workers=hint,
                            allow_other_workers=True,
                            key=f"nbflow-aux-{uuid.uuid4().hex[:10]}")
        try:
            return fut.result()
        finally:
            fut.release()

    def shares_disk(self, path: str) -> bool:
        return self.backend.shares_disk(self.worker, path)


def _to_futures(obj: Any, backend: DaskBackend) -> Any:
    """Arguments as Dask sees them: remote results become their futures (nested too)."""
    t = type(obj)
    if t is DaskResult:
        if obj.future is None:  # (released or handed over: it cannot be sent again)
            raise ResultReleased(_released_message(obj.key, backend.released_keys.get(obj.key, "?")))
        return obj.future
    if isinstance(obj, Remote):  # a remote result of another backend: bring it here
        return obj.fetch()
    if t is list:
        return [_to_futures(x, backend) for x in obj]
    if t is tuple:
        return tuple([_to_futures(x, backend) for x in obj])
    if t is dict:
        return {k: _to_futures(v, backend) for k, v in obj.items()}
    if t is set or t is frozenset:  # (Dask resolves futures in sets too)
        return t(_to_futures(x, backend) for x in obj)
    return backend.scattered.get(id(obj), (None, obj))[1]


def _remote_results(args: Any, kwargs: Any) -> list[DaskResult]:
    """The remote results among a call's arguments, in argument order."""
    found = remotes_in(args)
    if kwargs:
        remotes_in(kwargs, found)
    return [r for r in found if type(r) is DaskResult]


def _scan(obj: Any, found: list[DaskResult], big: list[Any]) -> bool:
    """One walk of a call's argument (containers too) for what a submission needs of it:
    its remote results of this backend in argument order (``found``, as
    :func:`_remote_results`), its large local values (``big``, as :func:`_big_locals`),
    and whether it holds a remote result of another backend, which would be fetched here
    on submit (the return).  (A submission ahead walked its arguments five times.)"""
    t = type(obj)
    if t is DaskResult:
        found.append(obj)
        return False
    foreign = False
    if t is list or t is tuple or t is set or t is frozenset:
        for x in obj:
            foreign = _scan(x, found, big) or foreign
    elif t is dict:
        for x in obj.values():
            foreign = _scan(x, found, big) or foreign
    elif isinstance(obj, Remote):
        return True
    else:
        size = cheap_size(obj)
        if size is not None and size >= SCATTER_MIN:
            big.append(obj)
    return foreign


def _big_locals(obj: Any, out: list[Any]) -> None:
    t = type(obj)
    if t is list or t is tuple or t is set or t is frozenset:
        for x in obj:
            _big_locals(x, out)
    elif t is dict:
        for x in obj.values():
            _big_locals(x, out)
    elif not isinstance(obj, Remote):
        size = cheap_size(obj)
        if size is not None and size >= SCATTER_MIN:
            out.append(obj)


class DaskBackend:
    name = "dask"
    accepts_remote = True  # takes DaskResults as arguments (their futures are submitted)
    # A task sent ahead is taken in by the engine as soon as the cluster says it finished,
    # without waiting for an engine slot (see the module).  False: as before session 10,
    # when a slot frees; what benchmarks/dask_lag.py compares (start and end are when the
    # call ran on its worker either way).
    live = True
    # A small result the caller takes at the end comes with its completion (see
    # _carry_limit).  False: gathered as the run closes, as before session 11 (what
    # benchmarks/locality.py's session-10 mode compares).
    carry = True
    # The run's first graph goes to Dask's client as soon as it holds every ready task (see
    # _first_graph_complete).  False: at the end of the loop's turn, as before session 13.
    first_graph_at_once = True
    # ... and before the run's thread starts, when it can (see send_first_graph).  False:
    # from the run's thread, as before session 13.
    send_before_start = True
    size_of = staticmethod(dask_size)  # output_bytes of a value here (a cache hit: core.sizes)

    def __init__(self, target: Any) -> None:
        try:
            import distributed  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the install
            raise ImportError(
                "backend='dask' needs the distributed package: pip install 'nbflow[dask]'"
            ) from None
        self.target = target
        self.client: Any = None
        self._cluster: Any = None
        self._own_client = False
        self._futures: set[Any] = set()
        self._tag = uuid.uuid4().hex[:8]
        self._attempts = itertools.count()  # (unique keys within the run's tag, no syscall each)
        self.capacity = math.inf  # set from the cluster's thread count once connected
        self.placement: Any = None  # a core.protocols.DataPlacement, attached by the run
        self.client_bytes = 0  # result bytes brought to this process
        self.closing_bytes = 0  # of which: results still held, brought here as the client closed
        self.fetched: list[tuple[str, int | None]] = []  # (task key, bytes) asked for here
        self.scattered_bytes = 0  # local argument bytes sent to the cluster
        self.scattered: dict[int, tuple[Any, Any]] = {}  # id(value) -> (value, its future)
        self._results: weakref.WeakSet[DaskResult] = weakref.WeakSet()
        self._disk: dict[tuple[str | None, str], bool] = {}
        self._scatter_lock: Any = None
        self.ahead: Ahead | None = None  # futures submitted ahead (set by bind_scheduler)
        self._to_locate: dict[str, asyncio.Future[Any]] = {}  # dask key -> waiter (see _where)
        self._topic = TOPIC  # where workers announce results (_apply_located)
        # the topic the workers announce on, None when the scheduler plugin tells instead
        # (set on connecting: _settle_announcements)
        self._announce: str | None = TOPIC
        # dask key -> (worker, bytes, seconds, (cpu seconds, peak RSS) or None, (start, stop)
        # on the worker in this process's clock or None), as told
        self._located: dict[str, tuple[str, int, float, tuple[float, int | None] | None,
                                       tuple[float, float] | None]] = {}
        self.clock = dask_clock.Clock()  # the workers' clocks read in this one's (dask_clock)
        self.taken_early = 0  # tasks sent ahead taken in as they finished, without a slot
        self.told_by_worker = self.asked_scheduler = 0  # how each result's place was learnt
        self.released_keys: dict[str, str] = {}  # task key -> the keep= that released it (_release)
        self.handed_over = 0  # results Dask frees itself once their consumers ran (_hand_over)
        # Results sent without a future this process holds (see _unheld): their Dask keys
        # while the run waits for their announcements, those announced, those that failed.
        self._node_of_key: dict[str, int] = {}  # Dask key -> node, until its batch is sent
        self._announced: set[str] = set()  # (unheld keys whose announcement was taken)
        self._erred: set[str] = set()
        self._dropped: set[str] = set()  # (dropped by Dask unrun: see _resend)
        self.resent = 0
        self.unheld = 0  # results no future of this process ever held
        self.hold_all = os.environ.get("NBFLOW_DASK_HOLD_ALL", "0") == "1"
        self._locating = False
        # Submissions sent together, one message each time a task and the successors that
        # go ahead with it are submitted (see dask_batch); None: one client.submit per task.
        self.batch: dask_batch.Batch | None = None
        self.batching = os.environ.get("NBFLOW_DASK_BATCH", "1") != "0"
        self._flush_due = False
        self._watcher: dask_watch.Watcher | None = None
        self._may_unhold = False  # (set on connecting: see _unheld)
        self._redone: dict[int, bool] | None = None  # _may_be_redone's answers while a batch is sent
        # consumer node -> (_consumer_facts) while a batch is sent: what _unheld reads per consumer
        self._consumers: dict[int, tuple[bool, list[int], list[tuple[int, str]]]] | None = None
        self.in_task: dask_cache.InTask | None = None  # the cache's work done in tasks (bind_scheduler)
        self.wanted: frozenset[str] = frozenset()  # task keys the caller takes at the end (bindings)
        self.prefetched: list[tuple[str, int | None]] = []  # (task key, bytes) brought at the end
        self.prefetch_bytes = prefetch_limit()  # (read here: a bad setting refuses the run)
        # Dask key -> the pickled value that came with its completion (see _carry_limit),
        # until the engine takes the result; and how many results came that way.
        self._carried: dict[str, bytes] = {}
        self.carried = 0
        self._carried_here: list[dask_brought.Brought] = []  # (their values, not read yet)
        # Called once the run's first tasks went to the scheduler (the Run lets go of the
        # run it displaced then: Run._let_go_of_displaced says why)
        self.on_first_send: Callable[[], None] | None = None
        self._opened = False  # (open: at most once, maybe before the run's loop exists)
        self.sent_early = False  # the first graph went before the run's thread started
        # Set when the cluster first tells of one of the run's tasks (it ended, failed or
        # was dropped: _on_located), or by the run's cancel: what a run whose first graph
        # went before its thread started waits for before its engine starts (Run._in_thread).
        self.news = threading.Event()

    def bind_scheduler(self, sched: Any) -> None:
        """The run's scheduler: successors are submitted ahead of their inputs from it
        (see :mod:`.dask_ahead`)."""
        self.ahead = Ahead(sched, self)
        self.in_task = dask_cache.InTask.of(sched, _apply_located, self._topic)

    @property
    def keep_remote(self) -> bool:
        return self.placement is None or bool(self.placement.keep_remote)

    @property
    def description(self) -> str:
        if self.client is not None:
            return f"dask ({self.client.scheduler.address})"
        return f"dask ({self.target})"

    async def open(self) -> None:
        from distributed import Client, LocalCluster

        if self._opened:  # (before the run's thread started: open_known)
            return
        if isinstance(self.target, Client):
            if self.target.asynchronous:
                raise ValueError(
                    "nbflow needs a synchronous distributed.Client (asynchronous=False); it "
                    "drives the client from its own event loop"
                )
            self.client = self.target
        elif self.target == "dask":
            def start() -> Any:
                cluster = LocalCluster(dashboard_address=None, processes=True, threads_per_worker=1)
                return cluster, Client(cluster, set_as_default=False)

            self._cluster, self.client = await anyio.to_thread.run_sync(start)
            self._own_client = True
        else:
            self.client = await anyio.to_thread.run_sync(
                lambda: Client(self.target, set_as_default=False, timeout="10s")
            )
            self._own_client = True
        client = self.client
        workers = known_workers(client)  # (a later run on the same client: no round trip)
        if workers is None:
            workers = await anyio.to_thread.run_sync(cluster_workers, client)
        threads = sum(int(w.get("nthreads", 1)) for w in workers.values())
        self.capacity = float(threads) if threads else math.inf
        if self.keep_remote:
            _announced_to[self._tag] = self
            scheduler = _shape(getattr(client, "_scheduler_identity", None))[0]
            if _subscribed.get(client) != scheduler or scheduler is None:
                # (one subscription per client and scheduler: every run's tasks announce on it)
                await anyio.to_thread.run_sync(client.subscribe_topic, self._topic, _on_located)
                _subscribed[client] = scheduler
        if not dask_recovery.known(client):  # hinted tasks survive their worker (once per client)
            await anyio.to_thread.run_sync(dask_recovery.ensure, client)
        self._connected(client)

    def open_known(self) -> bool:
        """:meth:`open`, done here and now when it needs no round trip, no thread and no
        loop: a synchronous ``Client`` that an earlier run of this process opened against
        the same cluster (its workers, the announcement topic and nbflow's scheduler plugin
        all known).  False: nothing done (the run's :meth:`open` does it all)."""
        from distributed import Client

        client = self.target
        if self._opened:
            return True
        if not isinstance(client, Client) or client.asynchronous or not dask_recovery.known(client):
            return False
        workers = known_workers(client)
        if workers is None:
            return False
        if self.keep_remote:
            scheduler = _shape(getattr(client, "_scheduler_identity", None))[0]
            if scheduler is None or _subscribed.get(client) != scheduler:
                return False
            _announced_to[self._tag] = self
        self.client = client
        threads = sum(int(w.get("nthreads", 1)) for w in workers.values())
        self.capacity = float(threads) if threads else math.inf
        self._connected(client)
        return True

    def _connected(self, client: Any) -> None:
        """The end of :meth:`open`: what needs no I/O once the cluster is known."""
        self._opened = True
        if self.placement is not None:
            self.placement.connected(client)  # (it reads the workers just learnt: no I/O)
        if self.batching and self.keep_remote and dask_batch.available(client):
            self.batch = dask_batch.Batch(client)
        # (a failure of a task no client holds is told by nbflow's scheduler plugin: without
        # it, every result is held as before)
        self._may_unhold = (self.batch is not None and not self.hold_all
                            and dask_recovery.active(client))
        self._settle_announcements(client)

    def _submit(self, fn: Callable[..., Any], args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
        if self.clock.first_sent is None:  # (a bound of the clocks' offset: see dask_clock)
            self.clock.submitting(time.time())
        if self.in_task is not None and self.keep_remote:  # with the cache's work (dask_cache)
            wrapped = self.in_task.task(options["key"], fn, args, kwargs)
            if wrapped is not None:
                if self.batch is not None:
                    return self.batch.add(options["key"], *wrapped, options.get("workers"))
                return self.client.submit(wrapped[0], *wrapped[1], **options)
        batch = self.batch
        if batch is not None:  # sent with the others at the next flush (see _flush)
            carry = self._carry_limit(options["key"])
            sent = (self._announce, fn, args, kwargs, carry) if carry else (self._announce, fn, args, kwargs)
            return batch.add(options["key"], _apply_located, sent, options.get("workers"))
        if self.keep_remote:
            return self.client.submit(_apply_located, self._announce, fn, args, kwargs, **options)
        return self.client.submit(_apply, fn, args, kwargs, **options)

    def _carry_limit(self, unique: str) -> int:
        """Up to how many bytes (pickled) the result of ``unique`` comes with its completion
        itself (0: it does not).  A result the caller takes as the run ends is gathered as
        the run closes (:meth:`_to_prefetch`): one more round trip to a worker, after the
        engine has seen the task end, on the path to the value in the caller's hand.  When
        it is small, the worker pickles it into the facts nbflow's scheduler plugin relays
        with the completion (:func:`_note_metrics`), and it arrives with the news that the
        task ended.  The same results as :meth:`_to_prefetch` takes, and only those: a
        sink whose key a ``%%workflow`` binding takes (:attr:`wanted`), or a sink the
        notebook names while prefetching is on, up to :data:`CARRY_BYTES`; only on a client
        that stays open, with the plugin reporting completions, of an nbflow whose workers
        can do it (an older worker's wrapper would refuse the extra argument: the
        scheduler's nbflow tells, :func:`.dask_recovery.carries`); a larger value is
        gathered as before."""
        ahead = self.ahead
        if (not self.carry or ahead is None or self._announce is not None or self._own_client
                or self._cluster is not None or not dask_recovery.carries(self.client)):
            return 0
        i = self._node_of_key.get(unique)
        if i is None or ahead.sched.succs[i]:
            return 0
        key = ahead.sched.nodes[i].key
        if key in self.wanted:
            return CARRY_BYTES
        kept = getattr(self.placement, "kept", None)
        if self.prefetch_bytes and kept is not None and key in kept:
            return min(CARRY_BYTES, self.prefetch_bytes)
        return 0

    def _take_carried(self, result: DaskResult, blob: bytes) -> None:
        """The value of ``result`` came with its completion: it is there as a gather
        started as the run ended would leave it (``prefetch``), counted as such."""
        from distributed.protocol.pickle import loads

        try:
            value = loads(blob)
        except Exception:  # (it does not unpickle here: gathered as before)
            return
        done = dask_brought.Brought()  # (the run's Taking is attached as it ends: _prefetch)
        done.set_result([value])
        result.prefetch = done
        self._carried_here.append(done)
        self._prefetched(result)
        self.carried += 1

    def shares_disk(self, worker: str | None, path: str) -> bool:
        """Does ``worker`` see the directory ``path`` of this machine (same device/inode)?"""
        if (worker, path) not in self._disk:
            try:
                st = os.stat(path)
                seen = self.client.run(_same_dir, path, (st.st_dev, st.st_ino),
                                       workers=[worker] if worker else None)
                ok = bool(seen) and all(seen.values())
            except Exception:
                ok = False
            self._disk[(worker, path)] = ok
        return self._disk[(worker, path)]

    async def _scatter(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> None:
        big: list[Any] = []
        _big_locals(args, big)
        if kwargs:
            _big_locals(kwargs, big)
        if not big:
            return
        if self._scatter_lock is None:
            self._scatter_lock = anyio.Lock()
        async with self._scatter_lock:  # two consumers of one value: one scatter
            for value in big:
                if id(value) not in self.scattered:
                    fut = await anyio.to_thread.run_sync(
                        functools.partial(self.client.scatter, value, hash=False))
                    self.scattered[id(value)] = (value, fut)  # the value is kept: its id stays
                    self.scattered_bytes += cheap_size(value) or 0

    def _hint(self, key: str, unique: str, remotes: list[DaskResult],
              after: list[str] | None = None) -> list[str] | None:
        """The placement's worker for ``key`` (``remotes``: the call's remote results, as
        :func:`_remote_results` finds them: walked once per submission by the caller)."""
        if self.placement is None:
            return None
        inputs = [(r.key, r.worker, r.nbytes) for r in remotes]
        if after:
            hint = self.placement.choose(key, unique, inputs, self._resources(key), after=after)
        else:
            hint = self.placement.choose(key, unique, inputs, self._resources(key))
        return list(hint) if hint else None

    def _resources(self, key: str) -> dict[str, float]:
        """The task's declared resources (the placement rule weighs them)."""
        if self.ahead is None:
            return {}
        i = self.ahead.index_of(key)
        if i is None:
            return {}
        task = self.ahead.sched.nodes[i].task
        return dict(task.spec.resources) if task is not None and task.spec.resources else {}

    def _options(self, unique: str, hint: list[str] | None) -> dict[str, Any]:
        options: dict[str, Any] = {"key": unique, "pure": False}
        if hint:
            options.update(workers=list(hint), allow_other_workers=True)
        return options

    def submit_ahead(self, i: int, key: str, fn: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any] | None, after: list[str]) -> DaskResult | None:
        """Submit node ``i`` before its inputs are done (see :mod:`.dask_ahead`); None when
        it needs something first (a large local value to scatter, a foreign remote)."""
        big: list[Any] = []
        remotes: list[DaskResult] = []
        foreign = _scan(args, remotes, big)  # (one walk: remote results, large locals)
        if kwargs:
            foreign = _scan(kwargs, remotes, big) or foreign
        if foreign or any(id(v) not in self.scattered for v in big):
            return None
        unique = f"{key}-{self._tag}-{next(self._attempts)}"
        self._node_of_key[unique] = i
        hint = self._hint(key, unique, remotes, after)
        keys = [r.dask_key for r in remotes]
        fut = self._submit(fn, _to_futures(args, self), _to_futures(kwargs, self) if kwargs else kwargs,
                           self._options(unique, hint))
        self._futures.add(fut)
        assert self.ahead is not None
        self.ahead.ahead[i] = (fut, unique, keys)
        self.ahead.by_key[unique] = i
        self.ahead.submitted_ahead += 1
        return DaskResult(key, fut, self, self._predicted(key), hint[0] if hint else None)

    def _watcher_for(self, loop: asyncio.AbstractEventLoop) -> dask_watch.Watcher | None:
        """The run's completion watcher (with batching on; see dask_watch).  Made as the
        engine starts its first Dask task: a task sent before that (:meth:`send_first_graph`)
        that the cluster said finished meanwhile is taken in now, as the watcher would have
        had it taken in."""
        if self.batch is None:
            return None
        if self._watcher is None or self._watcher.loop is not loop:
            early = self.ahead is not None and self.live
            self._watcher = dask_watch.Watcher(
                self.client, loop, told=self._told, located=self._announce is None,
                early=self._finished_ahead if early else None,
                early_keys=self.ahead.by_key if early else None)  # type: ignore[union-attr]
            told = [k for k in list(self._located) if k in self.ahead.by_key] if early else []  # type: ignore[union-attr]
            for key in told:  # (handed over as the watcher hands what it is told: one drain)
                self._watcher._hand(key, self._finished_ahead)
        return self._watcher

    def _finished_ahead(self, key: str) -> None:
        """(On the run's loop.)  The cluster says ``key`` finished, a task sent ahead that
        the engine has not started: the engine takes it in now, without an engine slot
        (:meth:`~nbflow.engine.scheduler.Scheduler.finished_elsewhere`; it asks
        :meth:`done_ahead` when the task is ready)."""
        ahead = self.ahead
        i = ahead.by_key.get(key) if ahead is not None else None
        if i is not None:
            try:
                ahead.sched.finished_elsewhere(i)  # type: ignore[union-attr]
            except ReferenceError:  # (the run's scheduler is gone: the run has ended)
                pass

    def done_ahead(self, i: int) -> float | None:
        """May the engine take ready node ``i`` in without a slot?  Yes when its task was
        sent ahead with exactly the inputs the engine now gives it (so starting it adopts
        that future: nothing new goes to the cluster) and the cluster said it finished.
        Returns when it started on its worker (this process's clock; NaN: not told), or
        None for no (it then waits for a slot as any task)."""
        ahead = self.ahead
        got = ahead.ahead.get(i) if ahead is not None else None
        if got is None:
            return None
        _, unique, keys = got
        told = self._located.get(unique)
        if told is None:
            return None
        # the inputs' latest results, as Ahead.take will compare them (without walking the
        # arguments: each input's Dask key is its own, and the arguments' shape is fixed)
        results = ahead.sched.results  # type: ignore[union-attr]
        now = {r.dask_key for d in ahead.sched.nodes[i].deps  # type: ignore[union-attr]
               if type(r := results[d]) is DaskResult}
        if now != set(keys):
            return None
        self.taken_early += 1
        return told[4][0] if told[4] is not None else math.nan

    def _settle_announcements(self, client: Any) -> None:
        """Who tells this process where each result is: nbflow's scheduler plugin, the
        completions of one turn of the scheduler's loop in one event (:mod:`.dask_plugin`),
        when it is registered and does so and completions go through the watcher (which
        waits for a held future's location as for an unheld one's completion); else each
        worker announces its results (:func:`_apply_located`).  ``NBFLOW_DASK_ANNOUNCE=1``
        keeps the workers' announcements (what ``benchmarks/locality_cpu.py`` compares)."""
        self._announce = self._topic
        if (self.keep_remote and self.batch is not None and dask_recovery.reports(client)
                and os.environ.get("NBFLOW_DASK_ANNOUNCE", "0") != "1"):
            self._announce = None
            if self.in_task is not None:  # (its events, the cache's facts, stay on the topic)
                self.in_task.apply = _apply_quiet

    def _told(self, key: str) -> bool:
        """Did the cluster already say that ``key`` ended (announced, or failed unheld)?"""
        return key in self._located or key in self._erred or key in self._dropped

    def _flush(self) -> None:
        """Send the submissions queued since the last flush, in one message."""
        self._flush_due = False
        if self.batch is not None:
            # one answer per node for the whole batch: the engine's states do not move
            # while it is sent, and a wide join asks about the same inputs once per producer
            self._redone, self._consumers = {}, {}
            try:
                self.batch.flush(self._unheld if self._may_unhold else None)
            finally:
                self._redone = self._consumers = None
            if self.on_first_send is not None and self.batch.messages:
                sent, self.on_first_send = self.on_first_send, None
                sent()
        self._node_of_key.clear()

    def send_first_graph(self) -> bool:
        """Send the run's first graph now, before its thread and its event loop run: every
        task with no input and everything that can go ahead with them
        (:meth:`.dask_ahead.Ahead.send_ready`), in one message, when the backend opens
        without a round trip (:meth:`open_known`) and every such task can go; the engine
        then adopts them as it starts them.  True if it was sent; False: nothing was
        (the run sends its first graph as its first task starts).

        From the call to the graph in Dask's client, the thread's start, its loop, the
        run's first events and the engine's first turns took ~2 ms on a quiet machine,
        all while the cluster sat idle (``benchmarks/RESULTS.md``, Session 13 (A))."""
        if not self.send_before_start or not self.batching or not self.open_known():
            return False
        ahead, batch = self.ahead, self.batch
        if batch is None or batch.messages or ahead is None or not ahead.send_ready():
            return False
        self._flush()
        self.sent_early = batch.messages > 0
        return self.sent_early

    def scheduler_here(self) -> bool:
        """Does the client's scheduler run in this process (a ``LocalCluster``'s, whose
        event loop shares this process's GIL with the run's thread)?"""
        sched = getattr(getattr(self.client, "cluster", None), "scheduler", None)
        return sched is not None and hasattr(sched, "tasks") and hasattr(sched, "plugins")

    def _first_graph_complete(self) -> bool:
        """Is the batch the run's first graph, holding every task of this backend that is
        ready (the first submission took them all ahead, :meth:`.dask_ahead.Ahead.submitted`)?

        Then it is sent at once, not at the end of the loop's turn (:meth:`_flush_soon`):
        the other tasks the engine starts in this turn adopt what was sent, and adopting
        sends nothing.  Until the graph is in Dask's client the cluster is idle, and a
        turn of the loop lets go of the GIL (its ``select``), which the caller, back from
        starting the run's thread, took there: ~0.3 ms on a quiet machine."""
        batch, ahead = self.batch, self.ahead
        return (self.first_graph_at_once and batch is not None and batch.messages == 0
                and bool(batch.items) and ahead is not None and ahead.every_ready_sent)

    def _flush_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """Flush once the tasks the engine starts in this turn of the event loop have all
        queued theirs (the engine starts every ready task before it waits again)."""
        if self.batch is not None and not self._flush_due:
            self._flush_due = True
            loop.call_soon(self._flush)

    def _predicted(self, key: str) -> int | None:
        predict = getattr(self.placement, "predicted_bytes", None)
        return predict(key) if predict is not None else None

    async def call(
        self, key: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> tuple[Any, int | None]:
        ahead = self.ahead
        i = ahead.index_of(key) if ahead is not None else None
        try:
            return await self._call(key, i, fn, args, kwargs)
        finally:
            if ahead is not None and i is not None:
                ahead.ended(i)

    async def _call(
        self, key: str, i: int | None, fn: Callable[..., Any], args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
    ) -> tuple[Any, int | None]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[bool, Any]] = loop.create_future()
        ahead = self.ahead
        taken = None
        remotes = _remote_results(args, kwargs)  # (walked once: to adopt, place, release)
        if ahead is not None and i is not None and i in ahead.ahead:
            taken = ahead.take(i, [r.dask_key for r in remotes])
        t0 = loop.time()
        if taken is not None:  # submitted ahead with these very inputs: adopt it
            fut, unique = taken
            if ahead is not None and i is not None:  # what follows it may go ahead now
                ahead.submitted(i, ahead.inflight.get(i) or DaskResult(key, fut, self, None, None))
        else:
            unique = f"{key}-{self._tag}-{next(self._attempts)}"
            await self._scatter(args, kwargs)
            if i is not None:
                self._node_of_key[unique] = i
            hint = self._hint(key, unique, remotes)
            sent_args = _to_futures(args, self)
            sent_kwargs = _to_futures(kwargs, self) if kwargs else kwargs
            t0 = loop.time()
            fut = self._submit(fn, sent_args, sent_kwargs, self._options(unique, hint))
            self._futures.add(fut)
            if ahead is not None and i is not None:
                ahead.submitted(i, DaskResult(key, fut, self, self._predicted(key),
                                              hint[0] if hint else None))
        # (made before the first graph goes: what the cluster tells of it from then on
        # reaches the engine through the watcher)
        watcher = self._watcher_for(loop)
        if self._first_graph_complete():
            self._flush()  # (the run's first graph: nothing else will join it this turn)
        else:
            self._flush_soon(loop)  # (this task, the successors that went ahead with it,
            # and every other task started in this turn of the loop: one message)

        def settle(outcome: tuple[bool, Any]) -> None:
            if not waiter.done():
                waiter.set_result(outcome)

        keep = self.keep_remote

        def done(f: Any) -> None:  # runs in distributed's one callback thread: never blocks
            try:
                if f.status == "finished":  # (the value, if wanted, is fetched below)
                    outcome: tuple[bool, Any] = (True, None)
                else:
                    outcome = (True, f.result())
            except BaseException as e:  # the task's own exception, re-raised below
                outcome = (False, e)
            loop.call_soon_threadsafe(settle, outcome)

        if (taken is not None and self.live and unique in self._located
                and (fut.status is None or fut.status == "finished")):
            settle((True, None))  # adopted after it ended and was told: nothing to wait for
        elif watcher is not None:  # (one hop from Dask's client loop, completions batched)
            watcher.watch(fut, lambda f: settle((True, None)))
        else:
            fut.add_done_callback(done)
        try:
            ok, value = await waiter
            if fut.status is None and unique in self._erred:  # failed unheld: hold it now,
                fut = self._hold(unique)  # and Dask's scheduler sends its error here
            elif fut.status is None and unique in self._dropped and unique not in self._located:
                # dropped unrun (every task taking it failed first): send it again, held
                fut = self._resend(unique)
                assert watcher is not None
                waiter = loop.create_future()
                watcher.watch(fut, lambda f: settle((True, None)))
                ok, value = await waiter
            if fut.status is None:  # ended unheld: its worker announced where the result is
                pass
            elif watcher is not None and not (fut.status == "finished" and keep):
                # an error, a cancellation, or a value that comes here: read off the loop
                # (a lost result is recomputed meanwhile: never in a callback thread)
                ok, value = await anyio.to_thread.run_sync(_outcome, fut, abandon_on_cancel=True)
            elif watcher is None and ok and not keep:  # (likewise, after a done-callback)
                ok, value = await anyio.to_thread.run_sync(_outcome, fut, abandon_on_cancel=True)
        except BaseException as e:
            if fut.status is not None:  # (an unheld task goes when what takes it goes)
                fut.cancel()
            self._futures.discard(fut)
            if isinstance(e, anyio.get_cancelled_exc_class()):  # its times: where it ran, if told
                told = self._located.get(unique)
                dask_clock.took_cancel(e, told[4] if told is not None else None)
            raise
        if not ok:
            self._futures.discard(fut)
            dask_clock.took_failure(value, self.clock, time.time())  # (when it ran there)
            raise _explain(key, value)
        seconds = loop.time() - t0
        if not keep:  # the old way: the value came back through this process
            self._futures.discard(fut)
            # (a metrics envelope from the worker: the size is the value's, as Dask sizes it)
            size = dask_size(value.measured_value if type(value) is Measured else value)
            self.client_bytes += size or 0
            if self.placement is not None:
                self.placement.finished(key, unique, None, size, seconds)
            return value, size
        told = self._located.pop(unique, None)
        where: Located
        if told is not None:  # the worker said where and how big (see _apply_located)
            where = (told[0], told[1], told[2], (told[0],))
            self.told_by_worker += 1
        else:
            where = await self._where(unique)
            self.asked_scheduler += 1
        worker, nbytes, compute, holders = where
        self._futures.discard(fut)
        if fut.status is None:  # nothing here holds it: Dask frees it after its consumers
            self._announced.add(unique)
            if self.batch is not None:
                self.batch.sent_unheld.pop(unique, None)
            result = DaskResult(key, None, self, nbytes, worker, dask_key=unique)
            self.released_keys[key] = str(getattr(self.placement, "keep", "unconsumed"))
            self.unheld += 1
        else:
            result = DaskResult(key, fut, self, nbytes, worker)
            blob = self._carried.pop(unique, None)
            if blob is not None:  # its value came with its completion (see _carry_limit)
                self._take_carried(result, blob)
        if self.in_task is not None:  # (what the task did for the cache on its worker)
            result.prepared = self.in_task.take(unique)
        self._results.add(result)
        if i is not None and getattr(self.placement, "release_consumed", False):
            self._release(i, remotes)
            self._hand_over(i, result)
        if self.placement is not None:  # the compute time, not our round trip, when known
            seconds = compute if compute is not None else seconds
            if len(holders) > 1:  # copies already made: which one is the original is settled
                self.placement.finished(key, unique, worker, nbytes, seconds, holders=holders)
            else:
                self.placement.finished(key, unique, worker, nbytes, seconds)
        if told is not None:
            result.compute_s = told[2]
            if told[3] is not None:  # what the worker measured (_note_metrics)
                result.worker_metrics = told[3]
            if told[4] is not None:  # when it ran (this process's clock), and so how long
                result.ran = told[4]
                result.compute_s = told[4][1] - told[4][0]
        return result, nbytes

    def _release(self, i: int, remotes: list[DaskResult]) -> None:
        """Node ``i`` finished: release each of its Dask inputs whose consumers have now all
        run, as ``dask.delayed`` would (placement ``keep="reachable"``, the default: those
        whose Ref the user does not hold; ``keep="unconsumed"``: all of them).  Holding
        every intermediate result costs the workers memory and makes each new result land
        in freshly mapped pages.  Only inputs consumed by Dask tasks alone are released (a
        construct or a collect node may hand the result on later), and never a saga
        member's (its undo task takes it if the saga rolls back); what a task failed or
        was skipped for keeps its inputs."""
        ahead = self.ahead
        if ahead is None:
            return
        sched = ahead.sched
        in_saga = getattr(sched, "saga_of", {})
        kept = getattr(self.placement, "kept", None)  # task keys the user can still name
        how = str(getattr(self.placement, "keep", "unconsumed"))
        for r in remotes:  # (the call's remote results: see _remote_results)
            p = ahead.index_of(r.key)
            if p is None or r.future is None or (kept is not None and r.key in kept) or p in in_saga:
                continue
            done = True
            for s in sched.succs[p]:
                cls = sched.class_of[s]
                if cls is None or cls.backend is not self or (
                        s != i and sched.state[s] is not COMPLETED):
                    done = False
                    break
            if done:
                self.released_keys[r.key] = how
                r.future.release()
                r.future = None

    def _hand_over(self, i: int, result: DaskResult) -> None:
        """Node ``i`` just finished and every task taking its result is already on the
        cluster: drop this process's hold on the result now, so that Dask's scheduler frees
        it as soon as the last of those tasks has run (what ``dask.delayed`` does), instead
        of one round trip later, when this process has seen them all complete
        (:meth:`_release`).  On a worker that runs a chain of large results, that round trip
        is the difference between reusing the memory just freed and mapping fresh pages for
        every result (``benchmarks/locality_cpu.py``: the workers' system time).

        Only a result ``_release`` would let go of anyway (not one the user names, not a
        saga member's, taken by Dask tasks of this backend alone), and only when nothing can
        send one of its consumers to Dask again with it: no result cache (the cache stores
        a result on its worker after the task completed), no consumer that may be retried,
        no consumer waiting for another input that may be retried or waits for a task that
        may be (:meth:`_may_be_redone`), and every consumer sent
        with the latest attempt of each of its inputs (else it is submitted afresh when it
        starts, see :meth:`.dask_ahead.Ahead.take`, and needs this result from here)."""
        ahead, placement, fut = self.ahead, self.placement, result.future
        if ahead is None or fut is None:
            return
        sched = ahead.sched
        kept = getattr(placement, "kept", None)
        succs = sched.succs[i]
        if (not succs or sched.cache is not None or (kept is not None and result.key in kept)
                or i in getattr(sched, "saga_of", {})):
            return
        for s in succs:
            cls, sent = sched.class_of[s], ahead.ahead.get(s)
            if cls is None or cls.backend is not self or sent is None:
                return  # (not on the cluster yet: it will need the result from here)
            ref = sched.nodes[s]
            if ref.task.spec.retries or any(d != i and self._may_be_redone(d) for d in ref.deps):
                return
            current = {self._current_key(d, i, result) for d in ref.deps}
            if result.dask_key not in sent[2] or not current.issuperset(sent[2]):
                return  # sent with an input's earlier attempt: it will be submitted afresh
        if self._flush_due:  # (the consumers' submission must reach the scheduler first)
            self._flush()
        self.released_keys[result.key] = str(getattr(placement, "keep", "unconsumed"))
        self.handed_over += 1
        fut.release()
        result.future = None

    def _unheld(self, unique: str) -> bool:
        """Send the task under Dask key ``unique`` without a future this process holds?

        Asked as its batch is sent.  Yes for a result that :meth:`_hand_over` would hand
        over the moment it completes, decided before it runs: Dask then treats it as it
        treats an intermediate of ``dask.delayed`` (no report to this process when it is
        in memory, no release message later, freed right after its last consumer), and the
        engine learns its completion, worker, size and seconds from its worker's
        announcement alone (:func:`_apply_located`; a failure from the note of nbflow's
        scheduler plugin, after which the key is held to read the error).

        The conditions are the hand-over's (no result cache, not a result the notebook
        names, not a saga member's, every consumer a task of this backend already queued
        with this very key and the latest attempt of its other inputs, no consumer that
        may be retried, no other input of a consumer that may come back under a new key:
        :meth:`_may_be_redone`) plus two that matter only because the task has not run yet: no
        timeout and no retries of its own (the engine would give up on an attempt that
        Dask still runs for its consumers).  Dask drops a task nobody holds, unrun, once
        every task taking it has failed (for another input's sake); if the engine waits
        for it, it is sent again, held (:meth:`_resend`)."""
        ahead = self.ahead
        i = self._node_of_key.get(unique)
        if ahead is None or i is None or not getattr(self.placement, "release_consumed", False):
            return False
        sched = ahead.sched
        ref = sched.nodes[i]
        mine = ahead.inflight.get(i)
        kept = getattr(self.placement, "kept", None)
        succs = sched.succs[i]
        if (mine is None or mine.dask_key != unique or not succs or sched.cache is not None
                or (kept is not None and ref.key in kept) or i in getattr(sched, "saga_of", {})
                or ref.task is None or ref.task.spec.retries or ref.task.spec.timeout):
            return False
        for s in succs:
            cls, sent = sched.class_of[s], ahead.ahead.get(s)
            if cls is None or cls.backend is not self or sent is None or unique not in sent[2]:
                return False
            retries, redone, latest = self._consumer_facts(s)
            if retries or any(d != i for d in redone):
                return False
            current = {mine.dask_key if d == i else key for d, key in latest}  # (_current_key)
            if not current.issuperset(sent[2]):
                return False
        return True

    def _consumer_facts(self, s: int) -> tuple[bool, list[int], list[tuple[int, str]]]:
        """What :meth:`_unheld` reads of consumer ``s``: does it retry, which of its inputs
        may be redone (:meth:`_may_be_redone`), and each input with the Dask key of its
        latest attempt.  Worked out once per consumer while a batch is sent (the engine's
        states do not move meanwhile): a join of ``n`` producers asked it once per
        producer, ``n`` times ``n`` inputs, on the path to the run's first graph."""
        memo = self._consumers
        got = memo.get(s) if memo is not None else None
        if got is None:
            consumer = self.ahead.sched.nodes[s] if self.ahead is not None else None
            assert consumer is not None
            got = (bool(consumer.task.spec.retries),
                   [d for d in consumer.deps if self._may_be_redone(d)],
                   [(d, self._latest_key(d)) for d in consumer.deps])
            if memo is not None:
                memo[s] = got
        return got

    def _may_be_redone(self, d: int, limit: int = 256) -> bool:
        """Could node ``d`` still come back under a new Dask key (it, or an unfinished task
        it waits for, may be retried)?  A consumer of ``d`` would then be submitted afresh
        when it starts, with every input sent again from here.  Past ``limit`` nodes the
        answer is yes (it errs towards holding)."""
        memo = self._redone
        if memo is not None:
            known = memo.get(d)
            if known is None:
                memo[d] = known = self._may_be_redone_now(d, limit)
            return known
        return self._may_be_redone_now(d, limit)

    def _may_be_redone_now(self, d: int, limit: int) -> bool:
        sched = self.ahead.sched if self.ahead is not None else None
        if sched is None:
            return True
        seen: set[int] = set()
        stack = [d]
        while stack:
            n = stack.pop()
            if n in seen or sched.state[n] is COMPLETED:
                continue
            if len(seen) >= limit:
                return True
            seen.add(n)
            task = sched.nodes[n].task
            if task is not None and task.spec.retries:
                return True
            stack.extend(sched.nodes[n].deps)
        return False

    def _hold(self, unique: str) -> Any:
        """Hold the result of ``unique`` after all (its task failed unheld): a future of
        this process, and the scheduler told that this client wants the key, so that it
        sends the task's error (and traceback) here as for any held future."""
        from distributed import Future

        fut: Any = Future(unique, self.client)
        self.client._send_to_scheduler({"op": "client-desires-keys", "keys": [unique]})
        self._futures.add(fut)
        return fut

    def _resend(self, unique: str) -> Any:
        """Send ``unique`` again, held this time: Dask dropped it unrun because every
        task taking it failed first (for another input's sake: a sibling's failure
        with ``continue_on_error``), yet the engine, which started it, waits for its
        outcome.  The scheduler still knows the key's inputs (a dropped task keeps its
        place in the graph while anything refers to it) and recomputes any of them it
        freed meanwhile, as it does for data lost with a worker."""
        assert self.batch is not None
        got = self.batch.sent_unheld.pop(unique, None)
        if got is None:  # (nothing kept to send: ask for the key, as for a failure)
            return self._hold(unique)
        task, worker = got
        fut = self.batch.again(unique, task, worker)
        self._flush()
        self._futures.add(fut)
        self.resent += 1
        return fut

    def _current_key(self, d: int, i: int, result: DaskResult) -> str:
        """The Dask key of node ``d``'s latest attempt (``result`` for node ``i``)."""
        if d == i:
            return result.dask_key
        return self._latest_key(d)

    def _latest_key(self, d: int) -> str:
        """The Dask key of node ``d``'s latest attempt as the engine records it."""
        assert self.ahead is not None
        got = self.ahead.inflight.get(d)
        if got is None:
            got = self.ahead.sched.results[d]
        return got.dask_key if type(got) is DaskResult else ""

    async def split_chunk(self, chunk: DaskResult, keys: list[str]
                          ) -> tuple[list[tuple[bool, Any, float]], float | None, int | None]:
        """A batched chunk's outcomes, its items' large values left on the worker as
        results of their own (see :mod:`.dask_chunks`)."""
        from . import dask_chunks

        return await dask_chunks.split(self, chunk, keys)

    async def _where(self, unique: str) -> Located:
        """Where Dask holds ``unique``'s result, its size and its kind's compute time.

        Asked of the scheduler in batches: the first caller sends one request for every
        key waiting at that moment, and keys that arrive meanwhile go in the next one.
        With tasks submitted ahead many finish together, so this is one round trip per
        batch rather than one per task."""
        loop = asyncio.get_running_loop()
        got: asyncio.Future[Located] = loop.create_future()
        self._to_locate[unique] = got
        if not self._locating:
            self._locating = True
            batch: dict[str, asyncio.Future[Any]] = {}
            try:
                while self._to_locate:
                    batch, self._to_locate = self._to_locate, {}
                    try:
                        ask = functools.partial(self.client.run_on_scheduler, _locate_many,
                                                keys=list(batch))
                        found = await anyio.to_thread.run_sync(ask)
                    except Exception as e:  # every waiter of the batch learns of it
                        for f in batch.values():
                            if not f.done():
                                f.set_exception(e)
                        continue
                    for k, f in batch.items():
                        if not f.done():
                            f.set_result(found.get(k, (None, None, None, ())))
            finally:  # (cancelled while asking: the others go on without a location)
                self._locating = False
                for f in [*batch.values(), *self._to_locate.values()]:
                    if not f.done():
                        f.set_result((None, None, None, ()))
                self._to_locate = {}
        return await got

    def _to_prefetch(self) -> list[DaskResult]:
        """The results to bring here as the run ends, because the caller will ask for them.

        * a result the caller said it will take (:attr:`wanted`: the Refs a ``%%workflow``
          cell binds to names, which the cell takes as the run ends);
        * a *small* result of a sink the notebook names (no task takes it, its Ref is held
          by the notebook as the run starts, at most :func:`prefetch_limit` bytes: 64 KiB
          by default, ``NBFLOW_DASK_PREFETCH``): a final answer, asked for with ``run[ref]``
          as a rule.  Its bytes are counted like any other (``client_bytes``, and
          :attr:`prefetched` lists them): a few KiB for the gather's round trip taken off
          the path from the run's end to the value in the caller's hand.

        Nothing else comes here: an intermediate result, a large one, one nobody names."""
        ahead, placement = self.ahead, self.placement
        kept = getattr(placement, "kept", None)
        limit = self.prefetch_bytes
        out = []
        for r in list(self._results):
            fut = r.future
            if r.fetched or r.prefetch is not None or fut is None or fut.status != "finished":
                continue
            if r.key in self.wanted:
                out.append(r)
                continue
            if not limit or kept is None or r.key not in kept or r.nbytes is None or r.nbytes > limit:
                continue
            i = ahead.index_of(r.key) if ahead is not None else None
            if i is not None and not ahead.sched.succs[i]:  # type: ignore[union-attr]
                out.append(r)
        return out

    def _prefetch(self, results: list[DaskResult]) -> list[Any]:
        """Start gathering ``results`` on the client's own loop (no thread, no wait here);
        returns the pending gathers and the values carried with their completions that the
        caller has not read yet (concurrent futures).  Once the caller has read them all,
        the placement is told (``taken``: its end-of-run read waits for that)."""
        client = self.client
        loop = getattr(getattr(client, "loop", None), "asyncio_loop", None)
        carried = [b for b in self._carried_here if not b.read]
        self._carried_here = []
        if loop is None or loop.is_closed():
            return []
        if not results and not carried:
            return []
        taken = getattr(self.placement, "taken", None)
        taking = dask_brought.Taking(len(results) + len(carried),
                                     taken if taken is not None else lambda: None)
        out: list[Any] = []
        for b in carried:
            b.attach(taking)
            out.append(b)
        for r in results:
            pending = dask_brought.bring(self._gather_here(r), loop, taking)
            r.prefetch = pending
            out.append(pending)
        return out

    async def _gather_here(self, r: DaskResult) -> list[Any]:
        """(On the client's loop) ``[r's value]``, its bytes counted before anyone sees it.

        Asked of the worker the completion named as its holder (one hop), not through
        Dask's ``gather`` (the client asks the scheduler, which asks the worker and relays
        the value): on a ``LocalCluster`` the scheduler is this process's, so its share of
        the relay is CPU under the GIL the run's end also needs.  A worker that no longer
        has it (moved, lost) sends nothing, and Dask's gather finds it then."""
        value = await self._from_holder(r)
        if value is None:
            value = list(await self.client.gather([r.future], asynchronous=True))
        self._prefetched(r)
        return value

    async def _from_holder(self, r: DaskResult) -> list[Any] | None:
        """``[r's value]`` from the worker the completion named (None: not there)."""
        fut, worker = r.future, r.worker
        if fut is None or not worker:
            return None
        from distributed.utils_comm import gather_from_workers

        try:
            data, _, _, _ = await gather_from_workers({fut.key: [worker]}, rpc=self.client.rpc)
        except Exception:  # (a worker gone meanwhile: Dask's gather knows where else)
            return None
        return [data[fut.key]] if fut.key in data else None

    def _prefetched(self, r: DaskResult) -> None:
        self.client_bytes += r.nbytes or 0
        self.prefetched.append((r.key, r.nbytes))

    async def aclose(self, cancelled: bool) -> None:
        futures, self._futures = list(self._futures), set()
        if self.ahead is not None:  # submitted ahead, never adopted (skipped, cancelled)
            futures += [f for f, _, _ in self.ahead.ahead.values()]
            self.ahead.ahead.clear()
            self.ahead.by_key.clear()
        client, cluster = self.client, self._cluster
        placement = self.placement
        closing = self._own_client or cluster is not None
        held = ([r for r in list(self._results) if not r.fetched and r.future is not None]
                if closing and not cancelled else [])

        futures = [f for f in futures if f.status is not None]  # (unheld: nothing to cancel)
        coming: list[Any] = []  # (the end-of-run read waits for these: its messages would delay them)
        if not closing and not cancelled and client is not None:
            coming = self._prefetch(self._to_prefetch())

        def close() -> None:
            if futures and client is not None:
                client.cancel(futures)
            _announced_to.pop(self._tag, None)  # (the client stays subscribed: other runs share it)
            if placement is not None and client is not None:
                try:  # a client that stays open is read after the run, off its path
                    if coming:
                        placement.closing(client, stays_open=not closing, after=coming)
                    else:
                        placement.closing(client, stays_open=not closing)
                except Exception:  # accounting must never break the end of a run
                    pass
            elif placement is not None:  # never connected (the run failed before it began):
                try:  # nothing to read, and the read's thread, parked or parking, must not wait
                    placement.closing(None)
                except Exception:
                    pass
            if held:  # the cluster goes away with the run: bring its results here first
                for r in held:
                    try:
                        r._value = r.future.result()
                    except Exception:  # a failed or lost result stays unfetchable
                        continue
                    self.client_bytes += r.nbytes or 0
                    self.closing_bytes += r.nbytes or 0
            if closing:
                for r in list(self._results):
                    r.future = None
                self.scattered.clear()
            if self._own_client and client is not None:
                client.close()
            if cluster is not None:
                cluster.close()

        if futures or held or closing:  # (a round trip to cancel, results to bring, a close)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close)
        else:  # nothing here waits (the read of a client that stays open has its own thread)
            close()
        if closing:
            self.client = self._cluster = None


def _outcome(f: Any) -> tuple[bool, Any]:
    """A done future's value or error (in a helper thread: reading it may block)."""
    try:
        return True, f.result()
    except BaseException as e:  # the task's own exception, re-raised by the caller
        return False, e


def _released_message(key: str, keep: str) -> str:
    """What ``run[ref]`` says of a result released once consumed, and the option keeping it."""
    if keep == "reachable":
        why = ("nothing of the notebook's named its Ref when the run started (a variable, a "
               "list of yours, a %%workflow binding), so the default keep='reachable' let it "
               "go. Keep a name for the Ref before running, or run inside "
               "nbflow.locality.placement(keep='all') to keep every result")
    else:
        why = (f"the run used placement keep={keep!r}; run inside "
               "nbflow.locality.placement(keep='all') to keep every result (or the default "
               "keep='reachable' with a name for the Ref)")
    return (f"the result of {key!r} was released from the Dask cluster once every task that "
            f"takes it had run: {why}")


def _explain(key: str, error: BaseException) -> BaseException:
    """A worker that died running the task becomes a clear :class:`WorkerLost`."""
    if type(error).__name__ == "KilledWorker":
        first, _, more = key.rpartition("+")  # a batched chunk's key: "<first item>+<others>"
        what = (f"the chunk of {int(more) + 1} map items from {first!r} (one Dask task)"
                if first and more.isdigit() else f"task {key!r}")
        lost = WorkerLost(
            f"{what}: the Dask worker running it died, and the cluster gave up after "
            f"retrying it on other workers ({error}). A task that kills its worker usually "
            "runs out of memory: give it less data per call or the workers more memory "
            "(distributed.scheduler.allowed-failures sets how many deaths Dask tolerates)")
        lost.__cause__ = error
        return lost
    return error
