"""The prediction room's parts of the live widget: the ETA line and the Timeline tab.

- :func:`eta_html`: ``ETA 12 s (80%: 10–15 s)`` for the progress line, recomputed at most
  every :data:`ETA_EVERY` seconds per run (an ETA costs a few dozen simulations).
- :func:`timeline_html`: a Gantt chart as inline SVG: one row per task that started (the
  first :data:`MAX_ROWS` by start time), its actual bar from start to end (to *now* while it
  runs) coloured by state (a task whose recorded span holds more than its call, because
  its start is when the engine started it and its end when the run learned of it, shows
  the wait as a thin line and the call's own seconds as the bar; a Dask task's start and
  end are its call's on its worker, so its bar is the call, where and when it ran), and
  over it the predicted bar
  (outline) from the same start with the duration history predicted before the run.  A
  dashed line marks *now* and, while the run goes, a shaded band the predicted end (ETA 80%
  band).

Both read the public ``run.tasks``; predictions come from the predictor that live views
share (:func:`nbflow.predict.eta.live_predictor`), and the ETA band from the run's shared
live estimate (:func:`nbflow.predict.eta.live_eta`), so drawing the chart never simulates
the run again by itself.
"""

from __future__ import annotations

import html
import math
import threading
import time
import weakref
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ETA_EVERY", "MAX_ROWS", "eta_html", "timeline_html"]

ETA_EVERY = 2.0
ETA_RETRY = 0.2  # seconds before asking again when there was no ETA yet
MAX_ROWS = 200
_STATE_COLOURS = {
    "completed": "#66bb6a", "running": "#42a5f5", "retrying": "#ffa726", "failed": "#ef5350",
    "cancelled": "#9e9e9e", "skipped": "#bdbdbd",
}
_eta_cache: weakref.WeakKeyDictionary[Any, tuple[float, str]] = weakref.WeakKeyDictionary()
_pred_cache: weakref.WeakKeyDictionary[Any, dict[str, float]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def eta_html(run: Any) -> str:
    """The ETA as a small HTML span (empty without history or once the run ended)."""
    if run is None or getattr(run, "status", "") not in ("pending", "running"):
        return ""
    now = time.monotonic()
    with _lock:
        cached = _eta_cache.get(run)
    # An ETA is re-asked every ETA_EVERY seconds; "none yet" (the quick estimate or the fit
    # still coming, a run too young to be worth one) only briefly, or a short run's view
    # would show its first ETA seconds late, when the run is nearly over.
    if cached is not None and now - cached[0] < (ETA_EVERY if cached[1] else ETA_RETRY):
        return cached[1]
    from nbflow.predict.eta import run_eta_text

    try:
        text = run_eta_text(run, patient=True)  # (a short run pays nothing for an ETA)
    except Exception:  # an estimate must never break the live view
        text = None
    out = (f'<span class="nbflow-eta" style="margin-left:8px;color:#455a64">{html.escape(text)}</span>'
           if text else "")
    with _lock:
        _eta_cache[run] = (now, out)
    return out


def _predicted(run: Any, t: pd.DataFrame) -> dict[str, float]:
    """Offline predicted durations by key (cached per run; None-free)."""
    from nbflow.predict.eta import live_eta, live_predictor

    # The chart never waits for a fit (a large history is fitted in the background): until
    # the predictor is ready it draws the quick per-task means (nbflow.predict.quick), not kept.
    predictor = live_predictor(run)
    if predictor is None:
        quick = live_eta(run).quick()
        if quick is None:
            return {}
        rows = pd.DataFrame({"task": t["task"].to_numpy(), "input_bytes": np.nan})
        return dict(zip(t["key"].tolist(), quick.predict(rows)["duration_s"].tolist(), strict=True))
    known = _pred_cache.setdefault(run, {})
    todo = t[~t["key"].isin(list(known))]
    if len(todo):
        rows = pd.DataFrame({"task": todo["task"].to_numpy(),
                             "input_bytes": todo["input_bytes"].astype(float).to_numpy()
                             if "input_bytes" in todo.columns else np.nan})
        pred = predictor.predict(rows)["duration_s"].to_numpy()
        known.update(zip(todo["key"].tolist(), pred.tolist(), strict=True))
    return known


def _waited(state: str, span: float, took: float) -> float:
    """Seconds of a finished task's span before its call ran, or 0.  A span recorded by
    the engine runs from when it started the task to when it learned of its end, which
    on a cluster also holds the wait for a worker and for the news, while ``took`` is the
    call's own time as its worker measured it (a span shorter than the call: the bar is
    the call's).  A Dask task's span is its call on its worker (see docs/locality.md), and
    a thread task's two differ by microseconds: nothing to show for either."""
    if state != "completed" or took != took or took < 0:
        return 0.0
    gap = span - took
    return gap if gap > 0.001 and gap > 0.05 * span else 0.0


def timeline_html(run: Any) -> str:
    """The Timeline tab's content (see the module docstring)."""
    if run is None:
        return ""
    t = run.tasks
    t = t[(t["executor"] != "inline") & t["start"].notna()].sort_values("start").head(MAX_ROWS)
    if t.empty:
        return '<div class="nbflow-timeline-empty">no task has started yet</div>'
    now = time.time()
    start = t["start"].map(lambda s: s.timestamp()).to_numpy()
    end = t["end"].map(lambda s: s.timestamp() if not pd.isna(s) else math.nan).to_numpy()
    end = np.where(np.isnan(end), now, end)
    took = (t["duration_s"].astype(float).to_numpy() if "duration_s" in t.columns
            else np.full(len(t), math.nan))
    origin = float(getattr(run, "started_at", math.nan))
    origin = origin if origin == origin else float(start.min())
    try:
        pred = _predicted(run, t)
    except Exception:
        pred = {}
    eta = None
    if run.status in ("pending", "running") and pred:
        from nbflow.predict.eta import live_eta

        try:  # the live views' shared estimate (re-simulated only when due), not a new one
            eta = live_eta(run).current(patient=True)
        except Exception:
            eta = None
    horizon = max(float(end.max()), now if run.status == "running" else 0.0) - origin
    pred_ends = [start[i] - origin + pred[k] for i, k in enumerate(t["key"]) if k in pred]
    horizon = max([horizon, *pred_ends, (now - origin + eta.remaining_hi) if eta else 0.0, 1e-3])
    width, label_w, row_h = 760, 150, 14
    scale = (width - label_w - 10) / horizon
    height = row_h * len(t) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="nbflow-timeline" width="{width}" '
             f'height="{height}" data-tasks="{len(t)}" data-predicted="{sum(k in pred for k in t["key"])}" '
             f'style="font:10px sans-serif">']
    for row, (key, state, s, e, d) in enumerate(zip(t["key"], t["state"], start, end, took, strict=True)):
        y = 4 + row * row_h
        label = f'<text x="{label_w - 4}" y="{y + 10}" text-anchor="end">{html.escape(str(key))[:24]}</text>'
        bar = [f'<g class="nbflow-bar" data-key="{html.escape(str(key))}" data-state="{state}">', label]
        waited = _waited(state, e - s, d)
        if waited:  # the call's own time ends the span; before it, a thin line: it waited
            x_wait = label_w + (s - origin) * scale
            bar.append(f'<rect class="waiting" x="{x_wait:.1f}" y="{y + row_h / 2 - 1:.1f}" '
                       f'width="{max(waited * scale, 1.0):.1f}" height="2" fill="#b0bec5"/>')
        if state == "completed" and d == d and d >= 0:
            s = e - d  # (a task sent ahead can be learned of as started after its call ran)
        x0 = label_w + (s - origin) * scale
        w_actual = max((e - s) * scale, 1.0)
        colour = _STATE_COLOURS.get(state, "#90a4ae")
        tip = f"{key}: {state}, {e - s:.3g} s" + (f" (waited {waited:.3g} s before)" if waited else "")
        bar.append(f'<rect class="actual" x="{x0:.1f}" y="{y + 2}" width="{w_actual:.1f}" '
                   f'height="{row_h - 4}" fill="{colour}"/>')
        p = pred.get(key)
        if p is not None:
            tip += f" (predicted {p:.3g} s)"
            bar.append(f'<rect class="predicted" x="{x0:.1f}" y="{y}" width="{max(p * scale, 1.0):.1f}" '
                       f'height="{row_h}" fill="none" stroke="#37474f" stroke-dasharray="3,2"/>')
        bar.append(f"<title>{html.escape(tip)}</title></g>")
        parts.extend(bar)
    axis_y = height - 12
    if run.status == "running":
        x_now = label_w + (now - origin) * scale
        parts.append(f'<line class="now" x1="{x_now:.1f}" x2="{x_now:.1f}" y1="0" y2="{axis_y}" '
                     'stroke="#455a64" stroke-dasharray="4,3"/>')
        if eta is not None and not math.isnan(eta.remaining_s):
            lo = label_w + (now - origin + eta.remaining_lo) * scale
            hi = label_w + (now - origin + eta.remaining_hi) * scale
            parts.append(f'<rect class="eta-band" x="{lo:.1f}" y="0" width="{max(hi - lo, 1):.1f}" '
                         f'height="{axis_y}" fill="#ffca28" opacity="0.25"><title>{html.escape(str(eta))}'
                         '</title></rect>')
    parts.append(f'<text x="{label_w}" y="{height - 2}">0 s</text>'
                 f'<text x="{width - 10}" y="{height - 2}" text-anchor="end">{horizon:.3g} s</text>')
    parts.append("</svg>")
    legend = ('<div style="font:11px sans-serif;color:#546e7a">filled: actual · outline: predicted from '
              'history before the run' + ("" if pred else " (no history yet: predictions appear once this "
                                         "workflow has run before)") + "</div>")
    return legend + '<div style="overflow:auto;max-height:640px">' + "".join(parts) + "</div>"
