"""What an ETA and a forecast are, and how they read as text and HTML.

:class:`Eta` (``run.eta()``: remaining seconds with an 80% band) and :class:`Forecast`
(``nf.forecast(wf)``: makespan per worker count) are plain frozen values; the modules that
compute them (:mod:`nbflow.predict.inflight`, :mod:`nbflow.predict.forecasting`) and the
live views (:mod:`nbflow.predict.live`) share this module's rendering of seconds
(:func:`fmt_seconds`), so every view writes a duration the same way.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import pandas as pd

from nbflow.core.errors import NbflowError

__all__ = ["Eta", "Forecast", "ForecastError", "fmt_seconds"]


class ForecastError(NbflowError, ValueError):
    """A forecast or ETA cannot be computed as asked; the message says what is missing."""


@dataclass(frozen=True)
class Eta:
    """Remaining time of a run: ``remaining_s`` (median) within ``[remaining_lo, remaining_hi]``
    (80%), after ``elapsed_s``; ``done`` of ``total`` tasks finished; ``no_history`` lists the
    tasks whose durations are guesses (no history of them).  ``calibrated``: True when the
    band was corrected by how honest the ETA's band was on the store's past runs
    (:mod:`nbflow.predict.eta_scores`), False when it is the simulated band because that
    correction is not worked out yet (it is, off the kernel's path: a later call has it),
    None when there is nothing to correct it by (no past run to learn from, or a
    predictor given by the caller)."""

    remaining_s: float
    remaining_lo: float
    remaining_hi: float
    elapsed_s: float
    done: int
    total: int
    no_history: list[str] = field(default_factory=list)
    calibrated: bool | None = None

    def __str__(self) -> str:
        if math.isnan(self.remaining_s):
            return f"ETA unknown ({self.done}/{self.total} tasks done)"
        # a task new to history is guessed from others: say which, as the forecast does
        new = (f"; guessed without history of their own: {', '.join(self.no_history[:5])}"
               + (f" (+{len(self.no_history) - 5})" if len(self.no_history) > 5 else "")
               if self.no_history else "")
        return f"{self.band_text()}, {self.done}/{self.total} tasks done{new}"

    def band_text(self) -> str:
        """``ETA 12 s (80%: 10–15 s)``, saying so when the band is not calibrated yet."""
        note = "; band not calibrated yet" if self.calibrated is False else ""
        return (f"ETA {fmt_seconds(self.remaining_s)} "
                f"(80%: {fmt_seconds(self.remaining_lo)}–{fmt_seconds(self.remaining_hi)}{note})")


@dataclass(frozen=True)
class Forecast:
    """Predicted makespan per worker count, before running.

    ``table``: one row per worker count (``workers``, ``makespan_s`` median, ``makespan_lo``,
    ``makespan_hi``: 80% band); ``critical_path``: the task keys of the heaviest predicted
    chain and ``critical_path_s`` its predicted length (no worker count beats it);
    ``recommended_workers``: the knee of the curve, the fewest workers whose makespan is
    within 10% of the best; ``no_history``: task names predicted without history of their
    own; ``fallbacks``: for every task name not predicted from its own history (or whose
    code changed since), how it was predicted (``code lineage: <name>``, ``similar name:
    <name>``, ``global prior`` or ``history (code changed)``); ``maps``: for every map over
    a Ref (items known only when it runs), the items counted for it (as many as in its
    newest run; None: never run, counted as nothing).
    """

    table: pd.DataFrame
    critical_path: list[str]
    critical_path_s: float
    recommended_workers: int
    no_history: list[str]
    tasks: int
    fallbacks: dict[str, str] = field(default_factory=dict)
    maps: dict[str, int | None] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"forecast: {self.tasks} tasks, critical path {fmt_seconds(self.critical_path_s)}, "
                 f"recommended workers {self.recommended_workers}"]
        for r in self.table.itertuples():
            noun = "worker: " if r.workers == 1 else "workers:"
            lines.append(f"  {r.workers:>4} {noun} {fmt_seconds(r.makespan_s)} "
                         f"(80%: {fmt_seconds(r.makespan_lo)}–{fmt_seconds(r.makespan_hi)})")
        lines += [f"  {line}" for line in self._fallback_lines()]
        return "\n".join(lines)

    def _fallback_lines(self) -> list[str]:
        # "no history: a (similar name: b), c (global prior)" and "code changed: d".
        new = [f"{k} ({self.fallbacks.get(k, 'no history')})" for k in self.no_history[:10]]
        changed = [k for k, v in self.fallbacks.items() if v.startswith("history")][:10]
        out = [f"no history: {', '.join(new)}"] if new else []
        if changed:
            out.append(f"code changed (predicted from its earlier versions): {', '.join(changed)}")
        # a map over a Ref has its items only when it runs: say what was assumed of them
        counted = [f"{k} ({n} items, as in its last run)" for k, n in self.maps.items() if n is not None]
        missing = [k for k, n in self.maps.items() if n is None]
        if counted:
            out.append(f"maps over a result: {', '.join(counted[:10])}")
        if missing:
            out.append(f"not counted (a map over a result never run before; its items are known only "
                       f"when it runs, so the makespans above leave them out): {', '.join(missing[:10])}")
        return out

    def _repr_html_(self) -> str:
        head = (f"<b>forecast</b>: {self.tasks} tasks, critical path {fmt_seconds(self.critical_path_s)}, "
                f"recommended workers <b>{self.recommended_workers}</b>")
        note = "".join(f"<br>{html.escape(line)}" for line in self._fallback_lines())
        return head + note + self.table.to_html(index=False, float_format=lambda v: f"{v:.3g}")


def fmt_seconds(s: float) -> str:
    if math.isnan(s):
        return "?"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"

