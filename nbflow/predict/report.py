"""``run.prediction_report()``: how a finished run compared with what history predicted.

For every task call that really ran (completed, not served from the cache), the prediction
history made *before* the run (offline: the run's own tasks are not used) is set against
what happened: the point estimate, its 80% interval, the error, and whether the task fell
outside its interval.  A task slower than its interval's upper end is *unusually slow*:
worth a look (a bigger input than usual, a contended machine, a regression in the code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from nbflow.predict.model import Predictor

__all__ = ["PredictionReport", "prediction_report"]


@dataclass(frozen=True)
class PredictionReport:
    """``tasks``: one row per task call that ran (``key, task, actual_s, predicted_s, lo_s,
    hi_s, error_pct, outside`` = ``"slow"``, ``"fast"`` or ``""``, ``source``); ``families``:
    one row per task (``task, n, actual_median_s, predicted_median_s, mdape_pct, in_band_pct,
    slow``); ``note``: why the report is empty, if it is."""

    tasks: pd.DataFrame
    families: pd.DataFrame
    note: str = ""

    @property
    def unusually_slow(self) -> pd.DataFrame:
        """The task calls that took longer than the upper end of their 80% interval, the
        furthest above it first (about one call in ten is above it by chance: how far
        above is what tells)."""
        slow = self.tasks[self.tasks["outside"] == "slow"]
        over = slow["actual_s"].astype(float) / slow["hi_s"].astype(float).clip(lower=1e-12)
        return slow.iloc[np.argsort(-over.to_numpy(), kind="stable")]

    def __str__(self) -> str:
        if self.note:
            return f"prediction report: {self.note}"
        lines = ["prediction report (predicted from history before the run):"]
        for r in self.families.itertuples():
            lines.append(f"  {r.task}: {r.n} ran, median {r.actual_median_s:.3g} s vs predicted "
                         f"{r.predicted_median_s:.3g} s, median error {r.mdape_pct:.0f}%, "
                         f"{r.in_band_pct:.0f}% in band, {r.slow} unusually slow")
        slow = self.unusually_slow
        if len(slow):
            shown = ", ".join(f"{k} ({a:.3g} s, {_over(a, h)})"
                              for k, a, h in zip(slow["key"], slow["actual_s"], slow["hi_s"], strict=True))
            lines.append(f"  unusually slow (above the 80% band; about 1 call in 10 by chance), furthest "
                         f"first: {shown[:500]}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        if self.note:
            return f"<b>prediction report</b>: {self.note}"
        slow = self.unusually_slow[["key", "task", "actual_s", "predicted_s", "hi_s"]]
        return ("<b>prediction report</b> (predicted from history before the run)"
                + self.families.rename(columns=_FAM_HEADERS).to_html(
                    index=False, float_format=lambda v: f"{v:.3g}")
                + ("<b>unusually slow</b> (above the 80% band; about 1 call in 10 by chance), "
                   "furthest first" + slow.rename(columns=_SLOW_HEADERS).to_html(
                       index=False, float_format=lambda v: f"{v:.3g}")
                   if len(slow) else ""))


def _over(actual: float, hi: float) -> str:
    """How far ``actual`` is above the band's top ``hi``: both rounded to 3 digits can read
    the same ("0.257 s > 0.257 s"), so the distance is said as a share or a multiple."""
    ratio = actual / max(hi, 1e-12)
    if ratio >= 1.5:
        return f"{ratio:.1f}x the band's top {hi:.3g} s"
    return f"{(ratio - 1) * 100:.2g}% over the band's top {hi:.3g} s"


# what the HTML tables' columns say (the DataFrames keep their names, for code)
_FAM_HEADERS = {"n": "calls", "actual_median_s": "actual median (s)",
                "predicted_median_s": "predicted median (s)", "mdape_pct": "median error (%)",
                "in_band_pct": "in 80% band (%)", "slow": "unusually slow"}
_SLOW_HEADERS = {"actual_s": "actual (s)", "predicted_s": "predicted (s)", "hi_s": "band's top (s)"}

_TASK_COLS = ["key", "task", "actual_s", "predicted_s", "lo_s", "hi_s", "error_pct", "outside", "source"]
_FAM_COLS = ["task", "n", "actual_median_s", "predicted_median_s", "mdape_pct", "in_band_pct", "slow"]


def prediction_report(run: Any, predictor: Predictor | None = None) -> PredictionReport:
    """Compare the tasks of ``run`` with their predictions (see the module docstring).

    ``predictor`` defaults to one fitted on the store's history without this run.
    """
    from nbflow.predict.eta import default_predictor

    t = run.tasks
    ran = t[(t["state"] == "completed") & ~t["cached"].astype(bool) & (t["executor"] != "inline")]
    empty = PredictionReport(pd.DataFrame(columns=_TASK_COLS), pd.DataFrame(columns=_FAM_COLS))
    if ran.empty:
        return PredictionReport(empty.tasks, empty.families, "no task ran (all cached or none finished)")
    if predictor is None:
        predictor = default_predictor(exclude_run=run.id)
    if predictor is None:
        return PredictionReport(empty.tasks, empty.families,
                                "no history before this run to predict from; the next run will have one")
    rows = pd.DataFrame({"task": ran["task"].to_numpy(),
                         "input_bytes": ran["input_bytes"].astype(float).to_numpy()
                         if "input_bytes" in ran.columns else np.nan})
    pred = predictor.predict(rows)
    actual = ran["duration_s"].astype(float).to_numpy()
    lo, hi = pred["duration_lo"].to_numpy(), pred["duration_hi"].to_numpy()
    tasks = pd.DataFrame({
        "key": ran["key"].to_numpy(), "task": ran["task"].to_numpy(), "actual_s": actual,
        "predicted_s": pred["duration_s"].to_numpy(), "lo_s": lo, "hi_s": hi,
        "error_pct": (pred["duration_s"].to_numpy() - actual) / np.maximum(actual, 1e-9) * 100.0,
        "outside": np.where(actual > hi, "slow", np.where(actual < lo, "fast", "")),
        "source": pred["source"].to_numpy(),
    })
    fam = []
    for name, g in tasks.groupby("task", sort=False):
        fam.append({
            "task": name, "n": len(g), "actual_median_s": float(g["actual_s"].median()),
            "predicted_median_s": float(g["predicted_s"].median()),
            "mdape_pct": float(g["error_pct"].abs().median()),
            "in_band_pct": float((g["outside"] == "").mean() * 100.0),
            "slow": int((g["outside"] == "slow").sum()),
        })
    return PredictionReport(tasks, pd.DataFrame(fam, columns=_FAM_COLS))
