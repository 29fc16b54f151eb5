"""A quick per-family estimate from one SQL aggregate, for live views until the full fit arrives.

The full :class:`nbflow.predict.Predictor` is fitted on the store's history in a helper
process (:mod:`nbflow.predict.eta`); on a large history that takes seconds of CPU, which
on a small machine competes with the very run it would estimate.  A live view does not
need it to show a first ETA: the mean duration of each task in the workflow's recent runs
already says roughly how long the rest takes.  :func:`quick_predictor` asks the journal
for exactly that, aggregated in SQLite (one row per task name and run, never the calls
themselves), and :class:`QuickPredictor` answers the two questions an ETA asks
(``predict`` and ``sample``) from it:

- the point estimate of a task is its name's mean duration over the recent runs (a name
  never seen: the median of the others' means, ``source`` ``global prior``);
- draws multiply it by a per-name run effect (log-normal, the spread of that name's
  per-run log means, or the median spread of all names when it ran in one run only), a
  per-task noise (log-normal with the name's spread of calls within a run) and one factor
  shared by every task (the spread of the runs' total work);
- ``input_bytes`` is ignored: this is the rough first answer, and the run's pace
  (:func:`nbflow.predict.eta.run_pace`) corrects it as tasks finish.

The live ETA uses it until the full predictor is ready and only starts that fit once the
run is long enough for an ETA to matter (:data:`nbflow.predict.live.FIT_WORTH_S`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["QuickPredictor", "quick_predictor"]

QUICK_RUNS = 5  # the workflow's newest runs the quick estimate reads (~3 ms of query per 1 000 calls)
FLOOR_S = 1e-4  # no task is predicted shorter than this

# Per task name and run: calls, mean duration and mean square (the spread within the run),
# over the workflow's QUICK_RUNS newest runs other than the one asking.
_SQL = """
SELECT n.task, t.run_id, COUNT(*), AVG(t.duration_s), AVG(t.duration_s * t.duration_s)
FROM task_runs t JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx
WHERE t.run_id IN (SELECT id FROM runs WHERE name = ? AND id != ? ORDER BY start DESC LIMIT ?)
  AND t.state = 'completed' AND t.cached = 0 AND t.duration_s IS NOT NULL AND n.task IS NOT NULL
GROUP BY n.task, t.run_id
"""


@dataclass(frozen=True)
class _Name:
    mean_s: float  # mean duration of a call over the recent runs
    run_sd: float  # spread of the per-run log means (run effect); nan: one run only
    task_sd: float  # log-normal spread of calls within a run
    runs: int
    calls: int


def _lognormal_sd(mean: float, mean_sq: float) -> float:
    """The log-space spread of a log-normal with this mean and mean square."""
    if mean <= 0:
        return 0.0
    cv2 = max(mean_sq / (mean * mean) - 1.0, 0.0)
    return math.sqrt(math.log1p(cv2))


class QuickPredictor:
    """Per-name means and spreads (see the module docstring); ``predict`` and ``sample`` as
    :class:`nbflow.predict.Predictor` has them, so :func:`nbflow.predict.eta.eta_of` takes it."""

    def __init__(self, names: dict[str, _Name], work_sd: float) -> None:
        self.names = names
        self.work_sd = work_sd
        means = [v.mean_s for v in names.values()]
        self.prior_s = max(float(np.median(means)), FLOOR_S) if means else 1.0
        spreads = [v.run_sd for v in names.values() if v.run_sd == v.run_sd]
        self.run_sd = float(np.median(spreads)) if spreads else 0.0

    @classmethod
    def from_rows(cls, rows: list[tuple[Any, ...]]) -> QuickPredictor | None:
        """From the query's rows ``(task, run_id, calls, mean, mean square)``; None if empty.

        A few dozen rows (names x runs): read in plain Python, as pandas' fixed cost per
        group (~40 ms here) would be most of what a watched run's first ETA costs."""
        groups: dict[str, list[tuple[float, float, float]]] = {}
        totals: dict[Any, float] = {}
        for row in rows:
            if len(row) < 5 or any(v is None or (isinstance(v, float) and v != v) for v in row[:5]):
                continue
            task, run, n, m, sq = row[:5]
            if n <= 0:
                continue
            groups.setdefault(str(task), []).append((float(n), float(m), float(sq)))
            totals[run] = totals.get(run, 0.0) + float(n) * float(m)
        if not groups:
            return None
        names: dict[str, _Name] = {}
        for task, g in groups.items():
            n = np.array([x[0] for x in g])
            m = np.array([x[1] for x in g])
            mean = float((n * m).sum() / n.sum())
            within = [_lognormal_sd(a, b) for _, a, b in g]
            task_sd = float(np.average(within, weights=n))
            lm = np.log(np.maximum(m, FLOOR_S))
            run_sd = float(np.std(lm, ddof=1)) if len(lm) >= 2 else math.nan
            names[task] = _Name(max(mean, FLOOR_S), run_sd, task_sd, len(g), int(n.sum()))
        # The runs' total work varies with what they ran, not only how fast: the spread of
        # the per-run log totals is a generous bound for the shared error.
        t = np.array(list(totals.values()))
        work_sd = float(np.std(np.log(t), ddof=1)) if len(t) >= 2 else 0.0
        return cls(names, work_sd)

    def _rows(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        task = rows["task"].astype(str).to_numpy()
        point = np.full(len(task), self.prior_s)
        run_sd = np.full(len(task), self.run_sd)
        task_sd = np.full(len(task), 0.5)
        known = np.zeros(len(task), dtype=bool)
        for name in pd.unique(task):
            v = self.names.get(name)
            if v is None:
                continue
            sel = task == name
            point[sel], known[sel], task_sd[sel] = v.mean_s, True, v.task_sd
            run_sd[sel] = v.run_sd if v.run_sd == v.run_sd else self.run_sd
        return point, run_sd, task_sd, known

    def predict(self, rows: pd.DataFrame, finished: pd.DataFrame | None = None) -> pd.DataFrame:
        """Per row ``duration_s`` (its name's recent mean), an 80% interval, ``source``
        (``history`` or ``global prior``), ``model`` ``quick mean`` and ``online`` ``none``
        (the run's pace, applied by the ETA, is the only online correction)."""
        point, run_sd, task_sd, known = self._rows(rows)
        sd = np.sqrt(run_sd ** 2 + task_sd ** 2)
        z = 1.2815515655446004  # the 90% point of a standard normal
        return pd.DataFrame({
            "duration_s": point, "duration_lo": point * np.exp(-z * sd),
            "duration_hi": point * np.exp(z * sd),
            "model": "quick mean", "source": np.where(known, "history", "global prior"), "online": "none",
            "n_history": [self.names[t].calls if t in self.names else 0 for t in rows["task"].astype(str)],
        }, index=rows.index)

    def sample(self, rows: pd.DataFrame, n: int = 40, finished: pd.DataFrame | None = None,
               seed: int | None = 0) -> np.ndarray:
        """``n`` joint draws of the rows' durations, shape ``(n, len(rows))``."""
        point, run_sd, task_sd, _ = self._rows(rows)
        rng = np.random.default_rng(seed)
        task = rows["task"].astype(str).to_numpy()
        log = rng.standard_normal((n, len(task))) * task_sd + rng.standard_normal((n, 1)) * self.work_sd
        for name in pd.unique(task):
            sel = task == name
            log[:, sel] += rng.standard_normal((n, 1)) * run_sd[sel][0]
        # Log-normal draws centred on the mean, not the median: the estimate is of seconds.
        log -= (task_sd ** 2 + run_sd ** 2 + self.work_sd ** 2) / 2
        return point * np.exp(log)


def quick_predictor(workflow: str, exclude_run: str = "", store: Any = None,
                    runs: int = QUICK_RUNS) -> QuickPredictor | None:
    """The quick estimate for ``workflow`` from its ``runs`` newest runs other than
    ``exclude_run`` (one aggregate query); None without a store or without history."""
    if store is None:
        from nbflow.store.store import get_store

        store = get_store(warn=False)
    if store is None:
        return None
    return QuickPredictor.from_rows(store.journal.query(_SQL, (workflow, exclude_run, runs)))
