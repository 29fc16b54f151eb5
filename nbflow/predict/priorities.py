"""Learned dispatch priorities: critical paths weighted by how long tasks really take.

The scheduler starts ready tasks in order of their *longest remaining path* to the end of
the graph.  Without history every task counts 1, so a chain of ten 10 ms tasks outranks one
10-minute task.  Once the store has seen the workflow's tasks run, each task is weighted by
its mean measured duration (completed, uncached attempts in the workflow's last
:data:`RECENT_RUNS` runs of the same name), which is the classic upward rank: the task
heading the most remaining *work* starts first.  The same call of a workflow run again has
the same key (``"align-17"``), so a task's own past durations are used when they exist,
else the mean of every call of that task function: the calls of one function can differ
a lot (one sample in a map may be ten times bigger than the others).

- Tasks without history get the median weight of those with history; nodes that are not
  task calls (collecting a map, gates) weigh nothing.  A tiny unit term keeps the chain
  length as a tie-breaker, so equal durations order as before.
- Items a ``map`` adds while running get the engine's usual ``+1`` above their successors.
- ``NBFLOW_LEARNED_PRIORITY=0`` switches this off (unit weights, as without history).

:func:`apply_learned_priorities` is called once as a run is created; it reads the journal
(one grouped query over the recent runs' rows, by primary key) and replaces the
scheduler's levels.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from nbflow.store.recent import recent_means

__all__ = ["RECENT_RUNS", "apply_learned_priorities", "learned_weights", "mean_durations"]

RECENT_RUNS = 20
_TIE = 1e-9  # seconds per task on the path: breaks ties by chain length


def mean_durations(
    workflow: str, exclude_run: str = "", store: Any = None, keys: list[str] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """``(by task name, by task key)`` mean measured durations over the workflow's recent runs
    (by key: only ``keys``, the graph's in node order, when given)."""
    return recent_means("duration_s", workflow, exclude_run, store, RECENT_RUNS, keys=keys)


def learned_weights(
    names: list[str], kinds: list[str], means: dict[str, float],
    keys: list[str] | None = None, key_means: dict[str, float] | None = None,
) -> list[float] | None:
    """Per-node weights: the key's own mean, else its task's, else the median of the known
    (None when no task of the graph has history)."""
    key_means = key_means or {}
    keys = keys if keys is not None else [""] * len(names)
    kget, nget = key_means.get, means.get
    # (one pass per node: this runs over every item of a long map before its run starts)
    own = [(w if (w := kget(key)) is not None else nget(n)) if k == "task" or k == "undo" else None
           for n, k, key in zip(names, kinds, keys, strict=True)]
    unknown = own.count(None)
    if unknown == len(own):
        return None
    if unknown == len(kinds) - kinds.count("task") - kinds.count("undo"):  # every task has its weight
        return [_TIE if w is None else w + _TIE for w in own]
    fallback = statistics.median([w for w in own if w is not None])
    return [
        (0.0 if k not in ("task", "undo") else w if w is not None else fallback) + _TIE
        for w, k in zip(own, kinds, strict=True)
    ]


def apply_learned_priorities(run: Any, keys: list[str] | None = None, store: Any = None) -> bool:
    """Weight ``run``'s critical-path levels by history; True if it did.

    Called by the composition point as a run is made (``nbflow.workflow.prepare``), so the
    engine itself needs no knowledge of history: it only takes the weights
    (``run.weigh_priorities``).  ``keys``: the run's node keys in order, if the caller has
    them (the same list for every room lets them share one reading of the history);
    ``store``: the run's store, if the caller has it (else it is looked up).
    """
    if os.environ.get("NBFLOW_LEARNED_PRIORITY", "1") == "0":
        return False
    nodes = run.nodes
    if not nodes:
        return False
    if keys is None:
        keys = [r.key for r in nodes]
    try:
        means, key_means = mean_durations(run.name, exclude_run=run.id, store=store, keys=keys)
    except Exception:  # an unreadable store must never stop a run; unit weights then
        return False
    if not means:
        return False
    weights = learned_weights([r.name for r in nodes], [r.kind for r in nodes], means,
                              keys, key_means)
    if weights is None:
        return False
    run.weigh_priorities(weights)
    return True
