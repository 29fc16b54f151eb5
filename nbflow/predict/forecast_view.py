"""``%%workflow --forecast``: the forecast of a traced cell, shown instead of running it.

A small inline SVG plot (predicted makespan against workers, with its 80% band, the
critical path as the floor, the recommended worker count marked) above the forecast's
table; plain text for headless front ends.  Without history it shows why there is none.
"""

from __future__ import annotations

import html
import math
from typing import Any

__all__ = ["forecast_bundle", "forecast_svg"]

DEFAULT_WORKERS = (1, 2, 4, 8, 16)


def forecast_svg(fc: Any, width: int = 360, height: int = 180) -> str:
    """Makespan (median and 80% band) against workers, log2 x axis."""
    t = fc.table
    ws = [int(w) for w in t["workers"]]
    top = max(float(t["makespan_hi"].max()), fc.critical_path_s, 1e-9)
    left, right, up, down = 46, 10, 10, 26

    def x(w: int) -> float:
        span = math.log2(max(ws)) - math.log2(min(ws)) or 1.0
        return left + (math.log2(w) - math.log2(min(ws))) / span * (width - left - right)

    def y(v: float) -> float:
        return up + (1 - v / top) * (height - up - down)

    band = [f"{x(w):.1f},{y(h):.1f}" for w, h in zip(ws, t["makespan_hi"], strict=True)]
    band += [f"{x(w):.1f},{y(lo):.1f}" for w, lo in reversed(list(zip(ws, t["makespan_lo"], strict=True)))]
    line = " ".join(f"{x(w):.1f},{y(m):.1f}" for w, m in zip(ws, t["makespan_s"], strict=True))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="nbflow-forecast" width="{width}" '
             f'height="{height}" data-recommended="{fc.recommended_workers}" style="font:10px sans-serif">',
             f'<polygon points="{" ".join(band)}" fill="#90caf9" opacity="0.5"/>',
             f'<polyline points="{line}" fill="none" stroke="#1565c0" stroke-width="2"/>',
             f'<line x1="{left}" x2="{width - right}" y1="{y(fc.critical_path_s):.1f}" '
             f'y2="{y(fc.critical_path_s):.1f}" stroke="#ef6c00" stroke-dasharray="4,3">'
             f"<title>critical path {fc.critical_path_s:.3g} s</title></line>"]
    for w, m in zip(ws, t["makespan_s"], strict=True):
        mark = w == fc.recommended_workers
        colour = "#2e7d32" if mark else "#1565c0"
        parts.append(f'<circle cx="{x(w):.1f}" cy="{y(m):.1f}" r="{5 if mark else 3}" '
                     f'fill="{colour}"><title>{w} workers: {m:.3g} s</title></circle>')
        parts.append(f'<text x="{x(w):.1f}" y="{height - 12}" text-anchor="middle">{w}</text>')
    parts.append(f'<text x="{left - 4}" y="{y(top) + 8:.1f}" text-anchor="end">{top:.3g} s</text>'
                 f'<text x="{left - 4}" y="{y(0):.1f}" text-anchor="end">0</text>'
                 f'<text x="{(left + width) / 2:.0f}" y="{height - 1}" text-anchor="middle">workers</text>'
                 "</svg>")
    return "".join(parts)


def forecast_bundle(wf: Any, workers: int | None = None) -> dict[str, str]:
    """The display bundle of ``%%workflow --forecast`` for the traced workflow ``wf``."""
    from nbflow.predict.eta import ForecastError, forecast

    counts = sorted({*DEFAULT_WORKERS, *([workers] if workers else [])})
    try:
        fc = forecast(wf, workers=counts)
    except ForecastError as e:
        text = f"[nbflow] forecast of {wf.name!r}: {e}"
        return {"text/plain": text, "text/html": f"<div>{html.escape(text)}</div>"}
    text = f"[nbflow] {wf.name}: {fc}\n(nothing was run)"
    return {"text/plain": text,
            "text/html": forecast_svg(fc) + fc._repr_html_() + "<div>(nothing was run)</div>"}
