"""The locality room's side of a Dask run: place tasks, remember where data lives, and
read what the cluster moved.

One :class:`LocalityAgent` per run, attached to the Dask backend by the composition point
(it implements :class:`nbflow.core.protocols.DataPlacement`).  Its *mode* says how tasks
are placed:

``"locality"`` (default)  the rule of :mod:`.placement` (inputs, sizes, load)
``"none"``                results stay on the workers, Dask alone decides where tasks run
``"round-robin"``         each task to the next worker in turn (a baseline)
``"gather"``              every result comes back to this process and is sent out again
                          as an argument (how nbflow ran Dask tasks before; a baseline)
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from concurrent import futures
from typing import Any

from ..core.errors import NbflowError
from ..engine.backends.dask import cluster_workers
from . import memory, under_way
from .joins import JoinGraph
from .memory import MemoryEvidence
from .placement import BANDWIDTH, Placer, RoundRobin
from .transfers import edges_from_logs, frame, incoming_log, read_incoming_logs

MODES = ("locality", "none", "round-robin", "gather")
KEEP = ("reachable", "all", "unconsumed")  # which results stay on the cluster (locality.placement)
_REMEMBER = 50_000
AFTER_WAIT_S = 5.0  # (waits_for_take off) the longest the read waits for results being fetched
# ...and then for the caller to take them (see LocalityAgent.closing): the read's messages
# and CPU would otherwise share the process with the caller's last steps to its value.
TAKE_WAIT_S = 1.0
# ...and then, runs back to back, for the next run's graph to reach Dask (see under_way):
# the longest it waits (a run whose first task is long; settle and the client's close end
# the wait at once)
QUIET_WAIT_S = 5.0
RUN_THREAD = "nbflow-run-"  # how a run's own thread is named (engine/run.py): see closing
READ_THREAD = "nbflow-locality-read"
PARKED_CHECK_S = 5.0  # how often a parked read's thread looks whether its run was dropped
# (workflow, task key) -> compute seconds Dask measured for it in this process.  The
# durations the store records are nbflow's view of a task (for a task submitted ahead: from
# its inputs' completion), so a rerun in the same session places by what Dask measured.
_compute: OrderedDict[tuple[str, str], float] = OrderedDict()


def _at_close(keys: list[str], since: float | None = None, dask_worker: Any = None) -> dict[str, Any]:
    """On a worker, as the run ends: the entries of its transfer log that fetched one of
    the run's ``keys``, and its memory evidence over the run (from ``since``)."""
    return {"log": incoming_log(dask_worker, keys),
            "memory": memory.probe(keys, dask_worker, since)}


async def _both(client: Any, keys: list[str], since: float | None) -> tuple[Any, Any]:
    """(On the client's loop) :func:`_at_close` on every worker and the restarted tasks on
    the scheduler, asked together."""
    got, restarted = await asyncio.gather(client.run(_at_close, keys, since),
                                          client.run_on_scheduler(memory.suspicious, keys))
    return got, restarted


async def _ask_here(scheduler: Any, keys: list[str], since: float | None) -> tuple[Any, Any]:
    """(On the loop of a scheduler in this process) :func:`_at_close` on the workers the
    run's tasks were sent to (every worker when that is not known for sure:
    :func:`.dask_plugin.workers_sent`), through the scheduler's own broadcast, and the
    restarted tasks read from its table.  What ``client.run`` does, less its message to the
    scheduler and the answers' way back through it (``benchmarks/end_read.py``)."""
    from distributed.protocol.pickle import dumps

    from ..engine.backends.dask_plugin import workers_sent

    workers = workers_sent(scheduler, keys, since) if since is not None else None
    msg = dict(op="run", function=dumps(_at_close), args=dumps((keys, since)),
               kwargs=dumps({}), wait=True)
    answers = await scheduler.broadcast(msg=msg, workers=workers, on_error="return_pickle")
    return _results(answers), memory.suspicious(keys, scheduler)


def _results(answers: dict[str, Any]) -> dict[str, Any]:
    """The workers' results of a broadcast ``run`` (as ``client.run`` makes them): a worker
    that failed, or whose function raised, raises here (the read then falls back)."""
    from distributed.core import clean_exception
    from distributed.protocol import Serialize, Serialized, deserialize
    from distributed.protocol.pickle import loads

    out = {}
    for w, got in answers.items():
        if isinstance(got, bytes):  # (the pickled error of the message itself)
            raise loads(got)
        if got.get("status") != "OK":
            _, exc, tb = clean_exception(**got)
            raise (exc or RuntimeError(f"worker {w} failed the end-of-run read")).with_traceback(tb)
        result = got["result"]
        if isinstance(result, Serialized):  # (the scheduler's connections leave it packed)
            result = deserialize(result.header, result.frames)
        elif isinstance(result, Serialize):  # (in-process workers: never packed at all)
            result = result.data
        out[w] = result
    return out


def _scheduler_here(client: Any) -> Any:
    """The client's scheduler object if it runs in this process (a ``LocalCluster``'s),
    else None.  Its restarted tasks are then read from it in the reading thread: a
    dictionary look-up and an integer per key, which the scheduler's own thread only ever
    replaces whole (reading them from another thread sees either value, never a torn one)."""
    scheduler = getattr(getattr(client, "cluster", None), "scheduler", None)
    if scheduler is None:
        return None
    from distributed import Scheduler

    return scheduler if isinstance(scheduler, Scheduler) else None


# A client the caller keeps -> the deferred end-of-run reads still to run on it (each with
# its agent, which makes it begin at once).  Closing the client right after a run (the end
# of a ``with Client(...)`` block) would otherwise cut the read off: the run's transfers,
# their journal rows and its memory evidence lost.
_reads_on: weakref.WeakKeyDictionary[Any, dict[threading.Thread, LocalityAgent]] = \
    weakref.WeakKeyDictionary()
_reads_lock = threading.Lock()
# Runs whose deferred read was handed to a parked (daemon) thread: exit waits for them too
# (a read whose client is asynchronous is in no _reads_on entry).
_handed: weakref.WeakSet[LocalityAgent] = weakref.WeakSet()
CLOSE_WAIT_S = 30.0  # the longest a client's close waits for a read (a safety net only)


def _close_waits_for(client: Any, reading: threading.Thread, agent: LocalityAgent) -> None:
    """Make ``client.close()`` wait for ``reading`` first (``agent`` makes it begin at
    once), until :func:`_read_over`.  The wait is the instance's own ``close`` (the
    class's is untouched, and it is taken off again when no read is left); an asynchronous
    client's close is awaited on its loop, which the read needs, so it is not wrapped."""
    close = getattr(type(client), "close", None)
    if close is None or getattr(client, "asynchronous", False):
        return
    try:
        with _reads_lock:
            waiting = _reads_on.get(client)
            if waiting is None:
                waiting = _reads_on[client] = {}
                client.close = _closing_after_reads(weakref.ref(client), close)
            waiting[reading] = agent
    except TypeError:  # (an object that cannot be weakly referenced: its close is left alone)
        return


def _closing_after_reads(ref: weakref.ref[Any], close: Any) -> Any:
    def close_after_reads(*args: Any, **kwargs: Any) -> Any:
        client = ref()
        with _reads_lock:
            waiting = list(_reads_on.get(client, {}).items()) if client is not None else []
        for reading, agent in waiting:
            if reading is not threading.current_thread():
                agent._begin_now()
                reading.join(CLOSE_WAIT_S)
        return close(client, *args, **kwargs) if client is not None else None

    return close_after_reads


def _read_over(client: Any, reading: threading.Thread | None) -> None:
    """``reading`` has ended: the client's close no longer waits for it."""
    try:
        with _reads_lock:
            waiting = _reads_on.get(client)
            if waiting is None or reading is None:
                return
            waiting.pop(reading, None)
            if not waiting:
                del _reads_on[client]
                vars(client).pop("close", None)
    except TypeError:
        return


def _finish_reads_at_exit() -> None:
    """At interpreter exit, the deferred reads still to run begin now and exit waits for
    them (a read whose thread runs holds the exit anyway: it is not a daemon; one whose
    thread waits to start until the results brought to the caller arrive would be lost)."""
    with _reads_lock:
        agents = [a for waiting in list(_reads_on.values()) for a in waiting.values()]
        agents += [a for a in list(_handed) if a not in agents]
    for agent in agents:
        with contextlib.suppress(Exception):  # (what is lost at exit must not break it)
            agent._finish_now()


atexit.register(_finish_reads_at_exit)


def _parked(ref: weakref.ref[LocalityAgent], let_go: threading.Event) -> None:
    """A run's read thread, started during the run (:meth:`LocalityAgent.finished`) and
    parked until the run closes (:meth:`LocalityAgent.closing`) lets it go: it then does
    the deferred read, unless the read was done otherwise (its client closed with the run).
    It holds its agent weakly while parked: a run dropped unclosed leaves no thread."""
    while not let_go.wait(PARKED_CHECK_S):
        if ref() is None:
            return
    agent = ref()
    if agent is not None and agent._reading is threading.current_thread():
        agent._read_after(*agent._read_args)


class PlacementError(NbflowError, ValueError):
    """An unknown placement mode or a bad placement parameter."""


def check_keep(keep: str) -> str:
    if keep not in KEEP:
        raise PlacementError(
            f"unknown keep={keep!r}; use 'reachable' (the default: a result is released once "
            "every task taking it has run, unless the notebook still names its Ref), 'all' "
            "(every result stays readable with run[ref]) or 'unconsumed' (a result is "
            "released once every task taking it has run)")
    return keep


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise PlacementError(
            f"unknown placement {mode!r}; use one of {', '.join(repr(m) for m in MODES)}")
    return mode


class LocalityAgent:
    """Placement and accounting for one Dask run (see the module)."""

    def __init__(self, mode: str = "locality", bandwidth: float = BANDWIDTH) -> None:
        self.mode = check_mode(mode)
        self.keep_remote = mode != "gather"
        self.release_consumed = False  # release results once consumed (placement keep=)
        self.keep = "all"  # the placement keep= of the run (see locality.placement)
        self.kept: set[str] | None = None  # keep="reachable": task keys the user holds
        self.placer = RoundRobin() if mode == "round-robin" else Placer(bandwidth)
        self.backend: Any = None  # the run's Dask backend (its client-side byte counts)
        self.node_of: dict[str, str] = {}  # dask key -> task key (this run's keys only)
        self.inputs_of: dict[str, list[tuple[str, str | None, int | None]]] = {}
        self.hint_of: dict[str, str | None] = {}  # dask key -> worker hinted
        self.worker_of: dict[str, str | None] = {}  # task key -> worker holding its result
        self.nbytes_of: dict[str, int | None] = {}
        self.seconds_of: dict[str, float] = {}
        self.order: list[str] = []  # task keys in submit order
        self._ordered: set[str] = set()
        self.hints_sent = 0
        self._rows: list[dict[str, Any]] | None = None  # filled by the end-of-run read
        self._logs: dict[str, list[dict[str, Any]]] = {}
        self._reading: threading.Thread | None = None  # the end-of-run read, when deferred
        self._go = threading.Event()  # the deferred read may begin (see closing, taken)
        self._begun = False  # its thread was started (see _begin)
        self._read_client: Any = None  # the client it reads through
        self._read_args: tuple[Any, ...] = ()  # (_read_after's)
        self._read_thread: threading.Thread | None = None  # (kept once settled: _read_over's key)
        self._begin_lock = threading.Lock()
        self._parking: threading.Thread | None = None  # (see park, closing, _parked)
        self._let_go = threading.Event()
        self.sink: Any = None  # journals the rows (the store's, handed in by the workflow)
        self.workflow = ""  # the run's workflow name (set by attach)
        self.pred_bytes: dict[str, int] = {}  # task key -> predicted output bytes (history)
        self.pred_seconds: dict[str, float] = {}  # task key -> predicted duration (history)
        self.holders_of: dict[str, tuple[str, tuple[str, ...]]] = {}  # see finished()
        self.copies: dict[str, set[str]] = {}  # task key -> workers its result was sent to
        self.queued_seconds: dict[str, float | None] = {}  # dask key -> seconds its queue entry counts
        self._memory: MemoryEvidence | None = None  # read with the transfer logs
        self.ahead_hints = 0  # hints chosen for tasks submitted before their inputs finished
        self.unplaced = 0  # tasks left to Dask: an input's size was neither known nor predicted
        self.started: float | None = None  # wall clock when the run connected (connected())
        self.graph: JoinGraph | None = None  # the run's data edges (the rule's join term)
        self.hinted: dict[str, str] = {}  # task key -> worker hinted (the join term reads it)
        self.eta: dict[str, float] = {}  # task key -> predicted end (time.monotonic()), when hinted

    def predict(self, nbytes: dict[str, int], seconds: dict[str, float] | None = None) -> None:
        """Predicted output sizes and durations per task key, from the store's history
        (handed in by the composition point); the rule weighs them (see placement).  A
        recorded duration of a task submitted ahead is its time in nbflow's view (from
        its inputs' completion), at most its compute time: it errs towards keeping data
        where it is, and Dask's work stealing still rebalances a worker with a queue."""
        self.pred_bytes = dict(nbytes)
        self.pred_seconds = dict(seconds or {})

    def seconds(self, key: str) -> float | None:
        """``key``'s expected compute seconds: what Dask measured for it earlier in this
        process, else the store's history (None: unknown)."""
        got = _compute.get((self.workflow, key))
        return got if got is not None else self.pred_seconds.get(key)

    def predicted_bytes(self, key: str) -> int | None:
        """The predicted size of ``key``'s result before it is known (None: no history)."""
        return self.pred_bytes.get(key)

    # -- DataPlacement -------------------------------------------------------------------

    def connected(self, client: Any) -> None:
        self.started = time.time()  # (the memory evidence is read over the run from here)
        info = cluster_workers(client)  # (asked once per client and cluster shape)
        self.placer.set_workers(
            {w: d.get("nthreads", 1) for w, d in info.items()},
            {w: dict(d.get("resources") or {}) for w, d in info.items()},
            {w: float(d.get("memory_limit") or 0) for w, d in info.items()})

    def choose(self, key: str, dask_key: str, inputs: Sequence[tuple[str, str | None, int | None]],
               resources: dict[str, float], after: Sequence[str] = ()) -> list[str] | None:
        """The worker to prefer for ``key`` (inputs ``(task key, worker, bytes)``; ``after``:
        Dask keys of unfinished tasks it waits for, when it is submitted ahead of them)."""
        self.node_of[dask_key] = key
        self.inputs_of[key] = list(inputs)
        if key not in self._ordered:
            self._ordered.add(key)
            self.order.append(key)
        hint = None
        unknown = self.mode == "locality" and any(b is None for _, _, b in inputs)
        if unknown:  # an input not made yet, no history of its size: let Dask decide when
            self.unplaced += 1  # the input exists (it knows the real size and place then)
        elif self.mode in ("locality", "round-robin"):
            exclude = [(self.hint_of.get(d), self.queued_seconds.get(d)) for d in after]
            sec = self.queued_seconds[dask_key] = self.seconds(key)
            where = [(self._with_copies(p, w), b) for p, w, b in inputs]
            extra: dict[str, Any] = {}  # (the rule's join term and when its inputs are ready)
            joins = self.graph.joins(key, self._where, self._size) if self.graph else ()
            if joins:
                extra["joins"] = joins
            ready = self.placer.ready_in([self.eta.get(p) for p, _, _ in inputs
                                          if p not in self.worker_of])
            if ready > 0:
                extra["ready"] = ready
            hint = self.placer.choose(where, resources, sec, exclude, **extra)
            if hint is not None:  # its inputs will be on that worker from then on
                self.hinted[key] = hint
                self.eta[key] = self.placer.last_eta
                for p, _, _ in inputs:
                    self.copies.setdefault(p, set()).add(hint)
            if after:
                self.ahead_hints += 1
        self.hint_of[dask_key] = hint
        if hint is None:
            return None
        self.hints_sent += 1
        return [hint]

    def _where(self, key: str) -> str | frozenset[str] | None:
        """Where ``key``'s result is (with its copies), or was sent to be made (None: not
        placed yet, or left to Dask)."""
        return self._with_copies(key, self.worker_of.get(key) or self.hinted.get(key))

    def _with_copies(self, key: str, w: str | None) -> str | frozenset[str] | None:
        """``w`` and the workers ``key``'s result was sent to; the worker alone when there
        is no copy (the rule reads a worker and a set of one alike: no set per input per
        task then)."""
        if not w:
            return None
        copies = self.copies.get(key)
        return frozenset({w, *copies}) if copies else w

    def _size(self, key: str) -> int | None:
        """``key``'s result size: measured, else predicted (None: unknown)."""
        got = self.nbytes_of.get(key)
        return got if got is not None else self.pred_bytes.get(key)

    def finished(self, key: str, dask_key: str, worker: str | None, nbytes: int | None,
                 seconds: float, holders: Sequence[str] = ()) -> None:
        """``key``'s result is on ``worker`` (``holders``: every worker with a copy, when
        consumers submitted ahead fetched it before it was located)."""
        self.node_of[dask_key] = key
        if self._parking is None:  # (not parked as the graph went: see park)
            self.park()
        if len(holders) > 1:
            self.holders_of[key] = (dask_key, tuple(holders))
        self.worker_of[key] = worker
        self.nbytes_of[key] = nbytes
        self.seconds_of[key] = seconds
        self.placer.finished(self.hint_of.get(dask_key), seconds,
                             self.queued_seconds.pop(dask_key, None), nbytes, worker)
        if worker is not None:  # (a measured compute time: the result stayed on a worker)
            _compute[(self.workflow, key)] = seconds
            while len(_compute) > _REMEMBER:
                _compute.popitem(last=False)

    # Whether the end-of-run read's thread is started during the run (see park) and
    # parked until the run closes (False: started as the run closes, as in session 12;
    # benchmarks/end_read.py's session_13_b_off).
    parks = True

    def park(self) -> None:
        """Start the thread the end-of-run read will run in, now, while the run computes
        (once its first graph is sent: :func:`nbflow.locality.attach` defers it to then;
        else as its first task ends): starting a thread waits until it runs, which as the
        run closes is a wait on the run's way to its end (0.3 ms on a quiet machine, 1.5
        ms and more under load: ``benchmarks/dask_tail.py``); a parked thread is let go
        with an event.  A daemon, so that a run that never closes holds no exit; a read it
        was handed is waited for at exit like any other (:func:`_finish_reads_at_exit`)."""
        if self._parking is not None or not self.parks or self._reading is not None \
                or self._let_go.is_set():  # (parked already, or the run closed meanwhile)
            return
        parked = threading.Thread(target=_parked, args=(weakref.ref(self), self._let_go),
                                  name=READ_THREAD, daemon=True)
        self._parking = parked
        parked.start()

    def dropped(self, dask_key: str) -> None:
        """A submission was withdrawn (a task submitted ahead whose inputs changed)."""
        self.placer.dropped(self.hint_of.pop(dask_key, None), self.queued_seconds.pop(dask_key, None))

    def closing(self, client: Any, stays_open: bool = False, after: Sequence[Any] = ()) -> None:
        """The run is over: read the workers' transfer logs and memory state (:meth:`_ask`),
        and journal the rows.  ``stays_open``: the client outlives the run, so the read is deferred to a
        helper thread, joined by whatever needs its outcome first (``run.transfers``, the
        report): the run returns without waiting for it.

        ``after``: results being brought to the caller (concurrent futures).  The read's
        thread then starts once they have all arrived, in the thread that settles the last
        of them (starting a thread waits for it to run: not on the run's own way to its
        end), so that its messages to every worker do not delay them; and it reads once
        the caller has taken them (:meth:`taken`), something needs its outcome
        (:meth:`settle`, the client's close), or :data:`TAKE_WAIT_S` passed: their arrival
        wakes the caller, and the read's round trips and their handling, begun then, would
        share this process (and, on a ``LocalCluster``, Dask's scheduler's thread) with
        the caller's last steps to the value.  Without ``after`` the thread starts now.
        Called from a run's own thread (the backend closes there), the read also waits for
        that thread to end, that is for the run's last steps (its journal's last commit) and
        the caller's ``wait`` to return: a result carried with its completion leaves nothing
        to be brought, and a read begun at once took the GIL and Dask's client loop from
        those steps (``benchmarks/dask_first_compute.py``, variant ``read-at-close``)."""
        keys = list(self.node_of)
        if not stays_open:
            self._let_go.set()  # (a parked thread has nothing to do: it ends)
            self._read(client, keys)
            return
        # The journal's writer stays up until the deferred rows are written: the run's end
        # then does not let it exit only for the read to start a second one (a thread, and
        # the parked connection taken back) a few milliseconds later.
        hold = getattr(self.sink, "hold", None)
        if hold is not None:
            hold()
        brought = list(after)
        waits = self.waits_for_take and bool(brought)
        self._now = threading.Event()
        self._read_client = client
        here = threading.current_thread()
        run = here if here.name.startswith(RUN_THREAD) else None  # (never a caller's thread)
        self._read_args = (client, keys, [] if waits else brought, waits, run)
        parked = self._parking
        if parked is not None and parked.is_alive() and not self._let_go.is_set():
            self._reading = self._read_thread = parked  # (let go by _begin)
            with _reads_lock:
                _handed.add(self)
        else:
            self._reading = self._read_thread = threading.Thread(
                target=self._read_after, args=self._read_args, name=READ_THREAD, daemon=False)
        _close_waits_for(client, self._reading, self)
        pending = [f for f in brought if not f.done()] if waits else []
        if not pending:
            self._begin()
            return
        left = [len(pending)]
        lock = threading.Lock()

        def arrived(_: Any) -> None:  # (in the thread that settled it: Dask's client loop)
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self._begin()

        for f in pending:  # (one done meanwhile calls back here, at once)
            f.add_done_callback(arrived)

    def _begin(self, here_if_refused: bool = False) -> None:
        """Start the read's thread (once); ``here_if_refused``: read in this thread if no
        thread may start any more (at interpreter exit)."""
        with self._begin_lock:
            reading = self._reading
            if self._begun or reading is None:
                return
            self._begun = True
            if reading is self._parking:  # (running already, parked: see park)
                self._let_go.set()
                return
            try:
                reading.start()
                return
            except RuntimeError:
                if not here_if_refused:
                    self._begun_not(reading)
                    raise
            except BaseException:
                self._begun_not(reading)
                raise
        self._read_after(*self._read_args)  # (refused a thread at exit: read here)

    def _begun_not(self, reading: threading.Thread) -> None:
        _read_over(self._read_client, reading)
        self._reading = None
        self._release()

    def _finish_now(self) -> None:
        """(At interpreter exit.)  Do the deferred read now and wait for it."""
        self._go.set()
        self._need_now()
        self._begin(here_if_refused=True)
        reading = self._reading
        if reading is not None and reading.ident is not None:
            reading.join(CLOSE_WAIT_S)

    def _need_now(self) -> None:
        """The read's outcome is needed: it no longer waits for a run under way."""
        if self._now is not None:
            self._now.set()
            under_way.wake()

    def _begin_now(self) -> None:
        """Make the deferred read begin now: start its thread if it is not yet, and let it
        read without waiting for the caller to take what was brought, nor for a run under
        way."""
        self._go.set()
        self._need_now()
        self._begin()

    def taken(self) -> None:
        """The caller has taken the results brought to it as the run ended: the deferred
        read may begin (see :meth:`closing`)."""
        self._go.set()

    # Whether the deferred read waits for the caller to take what was brought (False: its
    # thread starts as the run closes and reads as those results arrive, as before session
    # 11; benchmarks/dask_tail.py).
    waits_for_take = True
    # Whether it then waits while a run is under way (a run right after this one, until its
    # graph reached Dask: see under_way; False: it reads at once, as before session 12).
    waits_for_next = True
    _now: threading.Event | None = None  # (the read's, made in closing) set: its outcome is needed

    def _read_after(self, client: Any, keys: list[str], after: list[Any], waits: bool,
                    run: threading.Thread | None = None) -> None:
        try:
            if after:  # (waits_for_take off: the results arrive meanwhile)
                futures.wait(after, timeout=AFTER_WAIT_S)
            if waits:
                self._go.wait(TAKE_WAIT_S)
            if run is not None and run is not threading.current_thread():
                run.join(AFTER_WAIT_S)  # (the run's thread ends right after its last steps)
            if self.waits_for_next:  # (a run started since: its graph goes to Dask first)
                under_way.wait_quiet(QUIET_WAIT_S, self._now)
            self._read(client, keys)
        finally:
            _read_over(client, self._read_thread)
            with _reads_lock:
                _handed.discard(self)
            self._release()

    def _release(self) -> None:
        """Let the journal's writer go (see :meth:`closing`): it commits the rows and exits."""
        release = getattr(self.sink, "release", None)
        if release is not None:
            release()

    def settle(self) -> None:
        """Wait for a deferred end-of-run read (see :meth:`closing`), which begins now if
        it still waited for the results brought to the caller, or for their taking."""
        reading = self._reading
        if reading is not None:
            self._begin_now()
            if self._reading is not None:  # (None: its thread could not start)
                reading.join()
            self._reading = None

    @property
    def rows(self) -> list[dict[str, Any]] | None:
        self.settle()
        return self._rows

    @property
    def logs(self) -> dict[str, list[dict[str, Any]]]:
        self.settle()
        return self._logs

    @property
    def memory(self) -> MemoryEvidence | None:
        self.settle()
        return self._memory

    def _read(self, client: Any, keys: list[str]) -> None:
        try:  # one call to every worker for its transfer log and its memory evidence
            got, restarted = self._ask(client, keys)
            self._logs = {w: g["log"] for w, g in got.items()}
            self._memory = memory.evidence({w: g["memory"] for w, g in got.items()}, restarted)
        except Exception:  # memory evidence is extra: the transfer accounting must not need it
            self._memory = None
            try:
                self._logs = read_incoming_logs(client)
            except Exception:  # the cluster went away: nothing can be read any more
                self._logs = {}
        self._settle_origins()
        self._rows = edges_from_logs(self._logs, self.node_of, self.consumers_on())
        if self.sink is not None and self._rows:
            self.sink(self._rows)

    def _ask(self, client: Any, keys: list[str]) -> tuple[dict[str, Any], dict[str, int]]:
        """Every worker's :func:`_at_close` and the scheduler's restarted tasks: both
        questions at once, in one hand-off to the client's loop (one wait for the slower
        answer, not one after the other).  A scheduler that runs in this process (a
        ``LocalCluster``'s) is asked on its own loop (:func:`_ask_here`): its broadcast to
        the workers the run's tasks were sent to, its table read for the restarted tasks,
        no message to it (``benchmarks/end_read.py``)."""
        sync = getattr(client, "sync", None)
        here = _scheduler_here(client)
        loop = getattr(getattr(here, "loop", None), "asyncio_loop", None)
        if self.asks_here and loop is not None and loop.is_running():
            return asyncio.run_coroutine_threadsafe(_ask_here(here, keys, self.started), loop).result()
        if sync is None or here is not None:  # (a stand-in without distributed's loop, or
            # the scheduler here: one after the other)
            got = client.run(_at_close, keys, self.started)
            if here is not None:
                return got, memory.suspicious(keys, here)
            return got, client.run_on_scheduler(memory.suspicious, keys)
        return sync(_both, client, keys, self.started)

    # Whether a scheduler in this process is asked on its own loop, the workers that ran the
    # run's tasks only (False: every worker by ``client.run`` and the scheduler's table read
    # here, as in session 12; benchmarks/locality.py's session-13-b-off).
    asks_here = True

    def _settle_origins(self) -> None:
        """Where a result was made, when copies existed by the time it was located: the one
        holder whose transfer log does not show it fetching the key."""
        if not self.holders_of:
            return
        fetched = {(k, w) for w, entries in self._logs.items() for e in entries for k in e["keys"]}
        for key, (dask_key, holders) in self.holders_of.items():
            made = [w for w in holders if (dask_key, w) not in fetched]
            if len(made) == 1:
                self.worker_of[key] = made[0]

    # -- what the run shows --------------------------------------------------------------

    def consumers_on(self) -> dict[tuple[str, str], list[str]]:
        """``(producer, worker) -> consumers that ran there``, in submit order."""
        out: dict[tuple[str, str], list[str]] = {}
        for consumer in self.order:
            w = self.worker_of.get(consumer)
            if w is None:
                continue
            for producer, _, _ in self.inputs_of.get(consumer, ()):
                out.setdefault((producer, w), []).append(consumer)
        return out

    def transfers(self) -> Any:
        """``run.transfers``: one row per key fetched between workers (see transfers.py)."""
        return frame(self.rows or [])

    def input_bytes_moved(self) -> dict[str, int]:
        moved: dict[str, int] = {k: 0 for k in self.order}
        for r in self.rows or []:
            if r["consumer"] is not None:
                moved[r["consumer"]] = moved.get(r["consumer"], 0) + r["bytes"]
        return moved
