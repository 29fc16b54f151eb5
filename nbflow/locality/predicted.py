"""Predicted output sizes from the store's history, for placing tasks whose producers have
not finished yet.

A task submitted before its inputs exist cannot be placed by measured sizes.  The store
has seen earlier runs of the workflow: the same call (the same key, e.g. ``"clean-3"``)
usually makes a result of about the same size, and calls of one task function are a good
second guess.  :func:`output_sizes` reads the mean output bytes of completed, uncached
attempts over the workflow's recent runs, by key and by task name; :func:`per_key` turns
them into one figure per node of a run (own key first, then the task's mean).  Durations
come from the prediction room (the composition point hands both to the placement agent).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..store.recent import recent_means

RECENT_RUNS = 20



def output_sizes(workflow: str, exclude_run: str = "", store: Any = None,
                 keys: list[str] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """``(by task name, by task key)`` mean output bytes over the workflow's recent runs (by
    key: only ``keys``, the graph's in node order, when given: a row per node, not per
    stored attempt)."""
    return recent_means("output_bytes", workflow, exclude_run, store, RECENT_RUNS, keys=keys)


def durations(workflow: str, exclude_run: str = "", store: Any = None,
              ) -> tuple[dict[str, float], dict[str, float]]:
    """``(by task name, by task key)`` mean seconds per attempt (for :func:`nf.plan`,
    which the locality room answers on its own; runs get durations from the prediction
    room through the composition point)."""
    return recent_means("duration_s", workflow, exclude_run, store, RECENT_RUNS)




def per_key(nodes: Iterable[tuple[str, str]], by_name: dict[str, float],
            by_key: dict[str, float]) -> dict[str, float]:
    """One prediction per ``(task name, key)`` node: its key's own mean, else its task's."""
    out: dict[str, float] = {}
    for name, key in nodes:
        got = by_key.get(key, by_name.get(name))
        if got is not None:
            out[key] = got
    return out
