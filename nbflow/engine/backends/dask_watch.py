"""Dask futures' completions handed to the run's event loop in batches, with one hop.

``Future.add_done_callback`` runs each callback in a thread of its own pool: Dask's client
loop notices the completion, hands it to that thread, which (in nbflow's callback) wakes
the run's event loop.  Two thread hand-offs per task, each a wake-up through a pipe, and
on a loaded machine each one a wait for the scheduler of the operating system: on a graph
of short tasks that is a visible share of the run's CPU and of its latency.

A :class:`Watcher` waits for the futures on Dask's client loop itself (a coroutine per
future, awaiting the future's state, as ``add_done_callback`` does before its hand-off)
and wakes the run's loop once for every completion that arrives while the previous
wake-up is still pending: completions that come in a burst cost one hand-off.  Held
futures to watch are handed to the client loop the same way, once per turn of the run's
loop; unheld ones (below) never are: the client loop is also where Dask's scheduler runs
on a ``LocalCluster``, and waking it for nothing delays the next task's start.

The callback runs in the run's loop and is told only that the future is no longer
pending; reading its value or its error (which may block) is the caller's business.

A future the client does not hold (an intermediate sent without being wanted: unbound,
``status`` None; see ``DaskBackend._unheld``) never changes state on this side.  Its end
is learnt from the announcement of its completion (or, if it failed, from the scheduler's
note on the same topic): the run's loop files it (or hands it over at once, when it was
told already), and :meth:`Watcher.announced`, called on the client loop, where the
announcements arrive, hands it over like a completion.

The announcement comes from the task's worker, or, when nbflow's scheduler plugin sends
the completions (``located=True``; :mod:`.dask_plugin`), from the scheduler, one event
for a turn of its loop, just after it reported the held futures of that turn to this
client.  A held future that finished is then handed over once its completion's facts
(worker, size, seconds) are here too, so the run never asks the scheduler for them; if
they are late by more than :data:`LATE` seconds it is handed over without them (the
backend asks, batched).

**Finished before the engine started it.**  A task sent ahead of its inputs
(:mod:`.dask_ahead`) is watched only once the engine starts it, which needs an engine slot;
its completion may come first.  With ``early`` set, the announcement of such a key
(``early_keys``: those sent ahead and not adopted yet) is handed to the run's loop like a
completion, as ``early(key)``, so the engine takes the task in at once (the backend then
does not watch it at all: it ended, and its facts are here).  Such news goes with the next
hand-off, or after :data:`EARLY_WAIT` seconds if none comes: most of it concerns a task the
engine is about to start anyway, and a wake-up of the run's loop for each would cost the
run's thread and, on a ``LocalCluster``, the scheduler that shares its process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Container
from typing import Any

LATE = 5.0  # seconds a finished held future waits for its completion's facts (see the module)
# Seconds the news of a task finished before the engine started it may wait to go with the
# next hand-off (see the module): not a wake-up of the run's loop of its own per completion.
EARLY_WAIT = 0.005


class Watcher:
    """Completion hand-offs from Dask's client loop to one run's loop (see the module)."""

    # Unheld futures are filed on the run's loop (False: on the client loop, as before
    # session 9; what ``benchmarks/locality.py``'s ``session-8`` mode compares).
    file_here = True

    def __init__(self, client: Any, loop: asyncio.AbstractEventLoop,
                 told: Callable[[Any], bool] | None = None, located: bool = False,
                 early: Callable[[Any], None] | None = None,
                 early_keys: Container[Any] | None = None) -> None:
        self.client = client
        self.located = located  # a finished held future waits for its announcement too
        self.loop = loop  # the run's event loop
        self.told = told  # was this key announced already? (asked on either loop)
        self.early = early  # told of a key in early_keys nobody watches yet (see the module)
        self.early_keys: Container[Any] = early_keys if early_keys is not None else ()
        # key -> who waits for its announcement (filed on either loop: under the lock)
        self._unheld: dict[Any, tuple[Any, Callable[[Any], None]]] = {}
        self._lock = threading.Lock()
        self.filed = 0  # unheld futures filed to wait for their announcement
        self._to_watch: list[tuple[Any, Callable[[Any], None]]] = []
        self._armed = False  # a hand-over of _to_watch to the client loop is scheduled
        self._done: list[tuple[Any, Callable[[Any], None]]] = []
        self._due = False  # a drain of _done is scheduled on the run's loop
        self._early: list[Any] = []  # keys told early, waiting for a hand-off (under the lock)
        self._early_timer = False  # a hand-off of _early is scheduled on the client loop
        self._waiting: set[asyncio.Future[None]] = set()  # (touched on the client loop only)
        self.wakeups = 0  # times the run's loop was woken for completions
        self.completions = 0
        self.late = 0  # finished held futures handed over without their announcement

    def watch(self, future: Any, callback: Callable[[Any], None]) -> None:
        """Call ``callback(future)`` in the run's loop once ``future`` is not pending
        (called from the run's loop)."""
        self._to_watch.append((future, callback))
        if not self._armed:
            self._armed = True
            self.loop.call_soon(self._arm)

    def _arm(self) -> None:
        """(On the run's loop, after the turn's batch was sent, so a future's ``status``
        says whether the client holds it.)  A held future is handed to the client loop to
        be awaited; an unheld one only waits for its announcement, which needs nothing of
        that loop: it is filed here, and the client loop is not woken for it."""
        items, self._to_watch = self._to_watch, []
        self._armed = False
        held = []
        for future, callback in items:
            if future.status is None and self.file_here:  # held by no client: its announcement tells
                self._await_announcement(future, callback)
            else:
                held.append((future, callback))
        if held:
            self.client.loop.add_callback(self._start, held)

    def _await_announcement(self, future: Any, callback: Callable[[Any], None]) -> None:
        """Hand ``future`` over once its key is told (at once if it already is).  The check
        and the filing are one step under the lock, as :meth:`announced`'s taking is, so an
        announcement that arrives meanwhile on the client loop is not missed."""
        with self._lock:
            told = self.told is not None and self.told(future.key)
            if not told:
                self._unheld[future.key] = (future, callback)
                self.filed += 1
        if told:
            self._hand(future, callback)

    def _start(self, items: list[tuple[Any, Callable[[Any], None]]]) -> None:
        for future, callback in items:  # (on the client loop; the loop keeps tasks weakly)
            if future.status is None:  # (released meanwhile: as an unheld one)
                self._await_announcement(future, callback)
                continue
            task = asyncio.ensure_future(self._wait(future, callback))
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)

    def announced(self, key: Any) -> None:
        """``key`` was announced (on the client loop): hand over whoever waits for it."""
        with self._lock:
            got = self._unheld.pop(key, None)
        if got is not None:
            self._hand(*got)
        elif self.early is not None and key in self.early_keys:  # sent ahead, not started yet
            with self._lock:
                if self._due:  # a hand-off is on its way: it goes with it
                    self._done.append((key, self.early))
                    return
                self._early.append(key)
                if self._early_timer:
                    return
                self._early_timer = True
            asyncio.get_running_loop().call_later(EARLY_WAIT, self._hand_early)

    def _hand_early(self) -> None:
        """(On the client loop.)  Keys told early that no hand-off took meanwhile go now."""
        with self._lock:
            self._early_timer = False
            if not self._early:
                return
            key = self._early.pop()
        self._hand(key, self.early)  # type: ignore[arg-type]  # (takes the others along)

    async def _wait(self, future: Any, callback: Callable[[Any], None]) -> None:
        while future.status == "pending":
            await future._state.wait()  # (what Future.add_done_callback itself awaits)
        key = future.key
        if (self.located and future.status == "finished" and self.told is not None
                and not self.told(key)):  # its facts come just after: wait for them
            with self._lock:
                self._unheld[key] = (future, callback)
            asyncio.get_running_loop().call_later(LATE, self._late, key, future)
            return
        self._hand(future, callback)

    def _late(self, key: Any, future: Any) -> None:
        """No announcement came for a finished held future: hand it over without one."""
        with self._lock:
            got = self._unheld.get(key)
            if got is None or got[0] is not future:
                return
            del self._unheld[key]
        self.late += 1
        self._hand(*got)

    def _hand(self, future: Any, callback: Callable[[Any], None]) -> None:
        with self._lock:
            early = self.early
            if self._early and early is not None:  # (news of tasks finished early rides
                self._done.extend([(k, early) for k in self._early])  # along: see announced)
                self._early.clear()
            self._done.append((future, callback))
            if self._due:
                return
            self._due = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the run's loop has closed: nobody waits any more
            pass

    def _drain(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            self._due = False
        self.wakeups += 1
        self.completions += len(done)
        for future, callback in done:
            callback(future)
