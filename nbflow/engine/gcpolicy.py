"""How runs use Python's cyclic garbage collector: the built graph is kept out of its scans.

A 100k-task graph is half a million long-lived objects; every full collection during a run
would walk them all, which made the per-task cost grow with the size of the graph (40 % of
the time at 100k tasks).  While at least one run is going:

* ``gc.freeze()`` moves every object that exists when the first run starts into a permanent
  generation the collector does not scan.  Nothing is leaked: ``gc.unfreeze()`` when the
  last run ends hands them back, collection of those objects is only deferred.
* the young-generation threshold is raised to at least 20 000 allocations, so tasks that
  churn through small objects trigger fewer, larger young collections.  Cyclic garbage is
  still collected, in batches.

Before a run, building the graph is a burst of allocations with nothing to collect: tracing
a 100 000-item map makes 100 000 nodes, and checking and planning it a list or two per node.
The young generation fills every 700 allocations and each of those collections, and the
full ones the growing graph triggers, walk objects that are all alive: two thirds of the
time of tracing a long map went there.  :func:`paused` switches the collector off for such a
burst (and back on after, if it was on); the objects are then examined once, later.

Both are process-wide, and runs may start and stop in several threads at once (each
background run has its own event loop thread).  A lock makes counting the active runs and
changing the collector's settings one step, so the first run to start is the only one that
freezes and saves the thresholds, and the last one to stop is the only one that restores
them, whatever the interleaving.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

YOUNG_THRESHOLD = 20_000  # allocations between young collections while a run is going

_lock = threading.Lock()
_active = 0  # runs inside graph_out_of_gc(); guarded by _lock
_saved: tuple[int, ...] | None = None  # thresholds before the first active run; guarded by _lock


def active_runs() -> int:
    """How many runs currently keep the graph out of the collector."""
    with _lock:
        return _active


def enter() -> None:
    """A run starts: the first of the active runs freezes and raises the threshold."""
    global _active, _saved
    with _lock:
        if _active == 0:
            gc.freeze()
            _saved = gc.get_threshold()
            gc.set_threshold(max(_saved[0], YOUNG_THRESHOLD), *_saved[1:])
        _active += 1


def leave() -> None:
    """A run ends: the last of the active runs restores the thresholds and unfreezes."""
    global _active, _saved
    with _lock:
        if _active <= 0:
            raise RuntimeError("gcpolicy.leave() without a matching enter()")
        _active -= 1
        if _active == 0:
            if _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
            gc.unfreeze()


@contextlib.contextmanager
def graph_out_of_gc() -> Iterator[None]:
    """Keep the (already built) graph out of the cyclic collector's scans while running."""
    enter()
    try:
        yield
    finally:
        leave()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection while building many long-lived objects at once (see the module
    doc); the collector is on again afterwards if it was on before."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
