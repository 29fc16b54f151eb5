"""Makespan forecasts before a run (``nf.forecast(wf)``).

The same question as a running run's ETA (:mod:`nbflow.predict.inflight`), asked of the
whole traced graph and of several worker counts at once: the durations are drawn from the
history predictor many times over, each draw is simulated with the engine's dispatch
policy, and each worker count gets the median makespan with its 80% band.  The critical
path by predicted durations bounds what any worker count can reach; the recommended worker
count is the knee of the curve.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nbflow.engine.priority import longest_remaining_path
from nbflow.predict.eta_types import Forecast, ForecastError
from nbflow.predict.inflight import DEFAULT_SAMPLES, TASK_KINDS, draw_durations, priority_of, topo_order
from nbflow.predict.lineage import lineage_keys_of_nodes
from nbflow.predict.simulate import simulate
from nbflow.store.map_items import expand_maps

if TYPE_CHECKING:
    from nbflow.predict.model import Predictor

__all__ = ["DEFAULT_WORKERS", "forecast"]

DEFAULT_WORKERS = (1, 2, 4, 8, 16)


def _worker_counts(workers: int | Sequence[int] | None) -> list[int]:
    """``workers`` as a list of worker counts; a single count is a list of one.  Anything
    else (a string, a fraction, a count below 1) is refused by name, not rounded: ``"16"``
    read as a sequence would be the counts 1 and 6."""
    if workers is None:
        return list(DEFAULT_WORKERS)
    given = [workers] if isinstance(workers, numbers.Number) else workers
    if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
        raise ForecastError(f"workers must be a whole number >= 1 or a list of them, e.g. [1, 2, 4], "
                            f"got {workers!r}")
    ws: list[Any] = list(given)
    whole = all(isinstance(w, numbers.Integral) and not isinstance(w, bool) for w in ws)
    if not ws or not whole or any(w < 1 for w in ws):
        raise ForecastError(f"workers must be a whole number >= 1 or a non-empty list of them, e.g. "
                            f"[1, 2, 4], got {workers!r}")
    return [int(w) for w in ws]


def forecast(
    wf: Any,
    workers: int | Sequence[int] | None = DEFAULT_WORKERS,
    predictor: Predictor | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> Forecast:
    """Predict the makespan of workflow ``wf`` on each worker count, without running it.

    ``workers`` is one worker count or a list of them (None: :data:`DEFAULT_WORKERS`).
    A ``map`` over a Ref (its items are known only when it runs) counts as many items as it
    had in the workflow's newest recent run that ran it (``Forecast.maps`` says how many;
    None: no history of it, counted as nothing, and the text says so), the same count
    ``nf.plan`` uses (:func:`nbflow.store.map_items.expand_maps`).
    ``predictor`` defaults to one fitted on the store's history (:func:`nbflow.history`).
    Raises :class:`ForecastError` when there is no history at all and no predictor.
    """
    from nbflow.engine.metrics import input_features

    ws = _worker_counts(workers)
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
        raise ForecastError(f"samples must be a whole number >= 1 (draws per worker count), got {samples!r}")
    nodes = list(getattr(wf, "nodes", []))
    if not nodes:
        raise ForecastError("the workflow has no tasks: trace task calls in `with nf.Workflow(...)` first")
    graph = expand_maps(str(getattr(wf, "name", "")), nodes)
    nodes, deps = graph.nodes, graph.deps
    maps = {k: c.items for k, c in graph.counts.items()}
    if predictor is None:
        from nbflow.predict.fitting import default_predictor

        predictor = default_predictor()
        if predictor is None:
            raise ForecastError("no history to predict from: run the workflow once (or pass "
                                "predictor=Predictor().fit(observations))")
    order, succs = topo_order(list(range(len(nodes))), deps)
    task_pos = [p for p, i in enumerate(order) if nodes[i].kind in TASK_KINDS]
    names = [nodes[order[p]].name for p in task_pos]
    inputs = []
    for p in task_pos:
        r = nodes[order[p]]
        b = input_features(r.args, r.kwargs)[0] if r.nested == 0 else None
        inputs.append(float(b) if b is not None else math.nan)
    codes = lineage_keys_of_nodes(nodes, [order[p] for p in task_pos])
    draws, point, no_hist, fallbacks = draw_durations(predictor, names, inputs, None, samples, seed, codes)
    base = np.zeros((draws.shape[0], len(order)))
    base[:, task_pos] = draws
    point_all = np.zeros(len(order))
    point_all[task_pos] = point
    prios = [priority_of(nodes[i]) for i in order]
    rows = []
    for w in ws:
        spans = [simulate(succs, d.tolist(), w, priorities=prios).makespan for d in base]
        lo, mid, hi = np.quantile(spans, [0.1, 0.5, 0.9])
        rows.append({"workers": w, "makespan_s": float(mid), "makespan_lo": float(lo),
                     "makespan_hi": float(hi)})
    table = pd.DataFrame(rows)
    best = float(table["makespan_s"].min())
    knee = int(table.loc[table["makespan_s"] <= 1.1 * best, "workers"].min())
    # Critical path by predicted durations: follow the heaviest successor from the heaviest root.
    level = longest_remaining_path(succs, weights=point_all.tolist())
    indeg = [0] * len(order)
    for out in succs:
        for j in out:
            indeg[j] += 1
    path: list[int] = []
    cur = max((i for i in range(len(order)) if indeg[i] == 0), key=lambda i: level[i], default=None)
    while cur is not None:
        path.append(cur)
        cur = max(succs[cur], key=lambda j: level[j], default=None)
    return Forecast(
        table=table,
        critical_path=[nodes[order[p]].key for p in path if nodes[order[p]].kind in TASK_KINDS],
        critical_path_s=float(max(level, default=0.0)),
        recommended_workers=knee,
        no_history=no_hist,
        tasks=len(task_pos),
        fallbacks=fallbacks,
        maps=maps,
    )
