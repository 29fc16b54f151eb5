"""Static HTML and SVG of a run: the progress line, the graph, the tasks table, the errors.

Everything here is a pure function of a :class:`~nbflow.notebook.model.RunModel` (and, for
the graph, a grouping and a layout).  The output uses inline attributes and inline styles
only, no scripts and no ids, so the same markup works inside an ``ipywidgets.HTML``, as a
``text/html`` output of a saved notebook (GitHub, nbviewer, papermill output) and several
times on one page.  Node tooltips are SVG ``<title>`` elements.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..core.counting import TaskCounts, count_tasks, shown_state
from .tracebacks import format_error, short_error

if TYPE_CHECKING:
    from .grouping import Group, Grouping
    from .layout import Layout
    from .model import RunModel

FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"
SANS = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"
CHAR_W = 7.0  # px per character at 11.5px monospace
SINGLE_H, GROUP_H = 28.0, 44.0
MAX_LABEL = 34

# state -> (fill, stroke, text)
COLOURS = {
    "pending": ("#eceff1", "#b0bec5", "#455a64"),
    "ready": ("#dbeafe", "#60a5fa", "#1e3a8a"),
    "running": ("#fde68a", "#d97706", "#713f12"),
    "retrying": ("#fed7aa", "#ea580c", "#7c2d12"),
    "completed": ("#bbf7d0", "#16a34a", "#14532d"),
    "cached": ("#a5f3fc", "#0891b2", "#164e63"),
    "failed": ("#fecaca", "#dc2626", "#7f1d1d"),
    "skipped": ("#f5f5f5", "#bdbdbd", "#757575"),
    "cancelled": ("#e5e7eb", "#6b7280", "#374151"),
}
STATUS_COLOURS = {"pending": "#90a4ae", "running": "#d97706", "completed": "#16a34a",
                  "failed": "#dc2626", "cancelled": "#6b7280"}
GLYPH = {"completed": "✓", "failed": "✗", "running": "▶", "retrying": "↻", "skipped": "–",
         "cancelled": "■", "ready": "◦", "pending": "", "cached": "✓"}
GROUP_GLYPH = {**GLYPH, "pending": "…", "cached": "⟲"}
ORDER = ("completed", "cached", "running", "retrying", "ready", "pending", "failed", "skipped", "cancelled")


def esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def fmt_seconds(s: float) -> str:
    if s is None or math.isnan(s):
        return "–"
    if s < 1:
        return f"{s * 1000:.0f} ms" if s >= 0.001 else f"{s * 1e6:.0f} µs"
    if s < 60:
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
    m, sec = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def clip(label: str, limit: int = MAX_LABEL) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def node_size(group: Group) -> tuple[float, float]:
    """The drawn size of a node (its label must fit)."""
    text = clip(group.label)
    width = max(64.0, CHAR_W * len(text) + 22.0)
    if not group.single:
        width = max(width, 150.0)
    return width, SINGLE_H if group.single else GROUP_H


# -- aggregation --------------------------------------------------------------------------

def group_counts(model: RunModel, grouping: Grouping) -> list[dict[str, int]]:
    """Per drawn node: counts by state (``cached`` counted apart from ``completed``).

    In a group, the collect node of a map is bookkeeping: only the real task calls count.
    """
    out: list[dict[str, int]] = [{} for _ in grouping.groups]
    state, cached, of, kinds = model.state, model.cached, grouping.of, model.kinds
    groups = grouping.groups
    for i in range(min(len(of), len(state))):
        g = of[i]
        if kinds[i] == "collect" and groups[g].items:
            continue
        s = shown_state(state[i], kinds[i])  # a collector waiting for its items is pending
        if s == "completed" and cached[i]:
            s = "cached"
        c = out[g]
        c[s] = c.get(s, 0) + 1
    return out


def aggregate_state(counts: dict[str, int]) -> str:
    """One state for a group: the one a person most needs to see."""
    active = any(counts.get(s) for s in ("running", "retrying", "ready", "pending"))
    for s in (("running", "retrying", "failed", "ready") if active else ("failed", "cancelled")):
        if counts.get(s):
            return s
    if active:
        return "pending"
    if counts.get("completed") or counts.get("cached"):
        return "completed"
    return "skipped" if counts.get("skipped") else "pending"


# -- tooltips ----------------------------------------------------------------------------

def _task_tooltip(model: RunModel, i: int) -> str:
    state = shown_state(model.state[i], model.kinds[i])
    waiting = " (waiting for its items)" if state != model.state[i] else ""
    lines = [f"{model.keys[i]}  ({model.names[i]})", f"state: {state}{waiting}"]
    if model.attempts[i]:
        lines.append(f"duration: {fmt_seconds(model.duration[i])}")
        lines.append(f"attempts: {model.attempts[i]}")
    if state == "completed":
        lines.append(f"cache hit: {'yes' if model.cached[i] else 'no'}")
        lines.append(f"output size: {fmt_bytes(model.output_bytes[i])}")
    if i in model.errors:
        lines.append(f"error: {short_error(model.errors[i], 400)}")
    elif i in model.retry_errors and state != "completed":
        lines.append(f"last retry error: {short_error(model.retry_errors[i], 400)}")
    if i in model.reasons:
        lines.append(f"skipped: {model.reasons[i]}")
    return "\n".join(lines)


def _group_tooltip(model: RunModel, group: Group, counts: dict[str, int]) -> str:
    m = group.members
    # Counted as the header counts (every member, a waiting collector pending): the
    # tooltips of all groups add up to the header's numbers.
    tally = count_tasks((model.state[i], model.cached[i], model.kinds[i]) for i in m)
    lines = [f"{group.label}: {tally.total} tasks", counts_phrase(tally.by_state, tally.cached)]
    durs = [model.duration[i] for i in m if not math.isnan(model.duration[i])]
    if durs:
        lines.append(f"duration: total {fmt_seconds(sum(durs))}, mean {fmt_seconds(sum(durs) / len(durs))}, "
                     f"max {fmt_seconds(max(durs))}")
    attempts = sum(model.attempts[i] for i in m)
    if attempts:
        lines.append(f"attempts: {attempts}")
    hits = sum(1 for i in m if model.cached[i])
    lines.append(f"cache hits: {hits}")
    sizes = [model.output_bytes[i] for i in m if model.output_bytes[i] is not None]
    if sizes:
        lines.append(f"output size: {fmt_bytes(sum(s for s in sizes if s is not None))} in total")
    failed = [i for i in m if i in model.errors]
    for i in failed[:3]:
        lines.append(f"error in {model.keys[i]}: {short_error(model.errors[i], 300)}")
    if len(failed) > 3:
        lines.append(f"... and {len(failed) - 3} more failed")
    return "\n".join(lines)


# -- the graph -----------------------------------------------------------------------------

def graph_svg(model: RunModel, grouping: Grouping, lay: Layout) -> str:
    """The graph as one SVG element; node colours show states."""
    counts = group_counts(model, grouping)
    w, h = lay.width, lay.height
    style = "max-width:100%;height:auto" if w <= 1600 else ""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="nbflow-graph" width="{w:.0f}" height="{h:.0f}" '
        f'viewBox="0 0 {w:.1f} {h:.1f}" style="{style}" data-tasks="{len(model)}" '
        f'data-nodes="{len(grouping.groups)}" data-level="{grouping.level}" data-layout="{lay.engine}" '
        f'font-family="{esc(FONT)}" font-size="11.5">'
    ]
    parts.append('<g class="nbflow-edges" fill="none" stroke="#90a4ae" stroke-width="1.2">')
    weights = edge_bytes(model, grouping)
    for a, b, d, (x0, y0, x1, y1) in lay.edges:
        nbytes = weights.get((a, b))
        if nbytes is None:
            parts.append(f'<path d="{d}"/>')
            parts.append(_arrowhead(x0, y0, x1, y1))
            continue
        width = edge_width(nbytes)
        parts.append(f'<path d="{d}" stroke-width="{width:.1f}" data-bytes="{nbytes}">'
                     f"<title>{esc(fmt_bytes(nbytes))}</title></path>")
        parts.append(_arrowhead(x0, y0, x1, y1, 7.0 + width))
    parts.append("</g>")
    for k, grp in enumerate(grouping.groups):
        cx, cy, nw, nh = lay.nodes[k]
        parts.append(_node(model, grp, counts[k], cx, cy, nw, nh))
    parts.append("</svg>")
    return "".join(parts)


EDGE_MIN_W, EDGE_MAX_W = 1.2, 7.0  # px; an edge carrying under THIN_BYTES stays at the minimum
THIN_BYTES = 1024


def edge_width(nbytes: int) -> float:
    """Stroke width of an edge carrying ``nbytes``: log scale (0.6 px per doubling past
    1 KiB), capped, so a 1 GB edge stands out without swallowing the drawing."""
    if nbytes <= THIN_BYTES:
        return EDGE_MIN_W
    return min(EDGE_MAX_W, EDGE_MIN_W + 0.6 * math.log2(nbytes / THIN_BYTES))


def edge_bytes(model: RunModel, grouping: Grouping) -> dict[tuple[int, int], int]:
    """Bytes along each drawn edge ``(tail, head)``: what Dask moved between the tasks
    (``model.edge_bytes``, from ``run.transfers``) when the run has such data, else the
    producers' output sizes.  Edges with nothing known are left out."""
    moved = model.edge_bytes
    keys, of, out = model.keys, grouping.of, model.output_bytes
    n = min(len(of), len(model))
    weights: dict[tuple[int, int], int] = {}
    for i in range(n):
        b = of[i]
        for d in model.deps[i]:
            if d >= n or of[d] == b:
                continue
            nbytes = moved.get((keys[d], keys[i]), 0) if moved else out[d]
            if nbytes is None:
                continue
            pair = (of[d], b)
            weights[pair] = weights.get(pair, 0) + nbytes
    return weights


def _arrowhead(x0: float, y0: float, x1: float, y1: float, size: float = 7.0) -> str:
    dx, dy = x1 - x0, y1 - y0
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    bx, by = x1 - ux * size, y1 - uy * size
    px, py = -uy * size * 0.45, ux * size * 0.45
    return (f'<polygon points="{x1:.1f},{y1:.1f} {bx + px:.1f},{by + py:.1f} {bx - px:.1f},{by - py:.1f}" '
            'fill="#90a4ae" stroke="none"/>')


def _node(model: RunModel, grp: Group, counts: dict[str, int],
          cx: float, cy: float, w: float, h: float) -> str:
    x, y = cx - w / 2, cy - h / 2
    if grp.single:
        i = grp.members[0]
        state = shown_state(model.state[i], model.kinds[i])
        look = "cached" if state == "completed" and model.cached[i] else state
        tip = _task_tooltip(model, i)
        kind = "task"
    else:
        state = aggregate_state(counts)
        look = state
        tip = _group_tooltip(model, grp, counts)
        kind = "group"
    fill, stroke, ink = COLOURS.get(look, COLOURS["pending"])
    dash = ' stroke-dasharray="4 3"' if look == "skipped" else ""
    out = [
        f'<g class="nbflow-node" data-key="{esc(grp.id)}" data-state="{state}" data-kind="{kind}" '
        f'data-members="{len(grp.members)}"'
        + (f' data-cached="{int(look == "cached")}"' if grp.single else "") + ">",
        f"<title>{esc(tip)}</title>",
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="5" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="1.4"{dash}/>',
    ]
    glyph = GLYPH.get(look, "")
    if grp.single:
        label = clip(grp.label) + (f" {glyph}" if glyph else "")
        out.append(f'<text x="{cx:.1f}" y="{cy + 4:.1f}" text-anchor="middle" fill="{ink}">'
                   f"{esc(label)}</text>")
    else:
        out.append(f'<text x="{cx:.1f}" y="{y + 15:.1f}" text-anchor="middle" fill="{ink}" '
                   f'font-weight="bold">{esc(clip(grp.label))}</text>')
        summary = "  ".join(f"{counts[s]} {GROUP_GLYPH[s]}" for s in ORDER if counts.get(s))
        out.append(f'<text x="{cx:.1f}" y="{y + 29:.1f}" text-anchor="middle" fill="{ink}" '
                   f'font-size="10.5">{esc(clip(summary, 40))}</text>')
        out.append(_bar(counts, x + 6, y + h - 9, w - 12, 4))
    out.append("</g>")
    return "".join(out)


def _bar(counts: dict[str, int], x: float, y: float, w: float, h: float) -> str:
    total = sum(counts.values()) or 1
    parts = [f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="#ffffff" opacity="0.7"/>']
    for s in ORDER:
        c = counts.get(s)
        if not c:
            continue
        sw = w * c / total
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{sw:.1f}" height="{h:.1f}" '
                     f'fill="{COLOURS[s][1]}"/>')
        x += sw
    return "".join(parts)


# -- the progress line ------------------------------------------------------------------------

def counts_phrase(by_state: dict[str, int], cached: int) -> str:
    """``5 completed (2 from cache), 1 failed, 3 pending``: a group tooltip's counts."""
    parts = []
    for s, v in by_state.items():
        parts.append(f"{v} {s}" + (f" ({cached} from cache)" if s == "completed" and cached else ""))
    return ", ".join(parts)


def progress_text(model: RunModel) -> str:
    """One line: ``quickstart: 7/12 completed, 2 running, 1 failed in 3.2 s``."""
    tally = model.task_counts()
    counts = tally.by_state
    parts = [f"{counts.get('completed', 0)}/{tally.total} completed"]
    parts += [f"{v} {k}" for k, v in counts.items() if k not in ("completed", "pending")]
    extra = []
    cached = tally.cached
    if cached:
        extra.append(f"{cached} from cache")
    if model.retries:
        extra.append(f"{model.retries} retries")
    detail = ", ".join(parts) + (f" ({', '.join(extra)})" if extra else "")
    return f"{model.name}: {detail} in {fmt_seconds(model.elapsed)}"


def throughput_html(model: RunModel) -> str:
    """``· 12.5 tasks/s``: tasks finished per second over the recent window (live header)."""
    rate = model.throughput()
    if rate is None:
        return ""
    text = f"{rate:.1f}" if rate >= 1 else f"{rate:.2f}"
    return (f' <span class="nbflow-throughput" data-rate="{rate:.4f}" style="color:#546e7a;font-size:12px">'
            f"· {text} tasks/s</span>")


def _done_text(tally: TaskCounts) -> str:
    """"7/10 tasks done" while every ended task completed; once some failed, were skipped or
    were cancelled, the count of those that completed, so a cancelled run does not read as
    finished ("120/302 tasks completed", the other states in the chips below)."""
    completed = tally.get("completed")
    if completed == tally.done:
        return f"{tally.done}/{tally.total} tasks done"
    return f"{completed}/{tally.total} tasks completed"


def progress_html(model: RunModel, note: str | None = None, hint: str | None = None) -> str:
    status = model.status
    colour = STATUS_COLOURS.get(status, "#90a4ae")
    tally = model.task_counts()
    counts = tally.by_state
    chips = []
    for s in ("completed", "running", "retrying", "ready", "pending", "failed", "skipped", "cancelled"):
        if counts.get(s):
            fill, stroke, _ = COLOURS[s]
            chips.append(
                f'<span class="nbflow-count" data-state="{s}" style="margin-right:10px;white-space:nowrap">'
                f'<span style="display:inline-block;width:9px;height:9px;border-radius:2px;'
                f'background:{fill};border:1px solid {stroke};margin-right:4px;vertical-align:middle"></span>'
                f"{counts[s]} {s}</span>")
    cached = tally.cached
    if cached:
        chips.append(f'<span class="nbflow-count" data-state="cached" style="margin-right:10px">'
                     f"{cached} from cache</span>")
    if model.retries:
        chips.append(f'<span style="margin-right:10px">{model.retries} retries</span>')
    run_id = (f' <span style="color:#90a4ae;font-size:11px">run {esc(model.run_id)}</span>'
              if model.run_id else "")
    if hint:
        run_id += f' <span class="nbflow-hint" style="color:#90a4ae;font-size:11px">· {esc(hint)}</span>'

    out = (
        f'<div class="nbflow-progress" data-status="{esc(status)}" data-done="{tally.done}" '
        f'data-total="{tally.total}" style="font-family:{esc(SANS)};font-size:13px;line-height:1.9">'
        f'<span class="nbflow-status" style="background:{colour};color:white;border-radius:3px;'
        f'padding:1px 7px;margin-right:8px;font-weight:600">{esc(status)}</span>'
        f"<b>{esc(model.name)}</b> · {_done_text(tally)} · "
        f'<span class="nbflow-elapsed">{fmt_seconds(model.elapsed)}</span>{run_id}<br>'
        + "".join(chips) + "</div>"
    )
    if note:
        out += f'<div class="nbflow-note" style="color:#8d6e63;font-size:12px">{esc(note)}</div>'
    return out


# -- tables ----------------------------------------------------------------------------------

TASK_COLUMNS = ["key", "task", "state", "attempts", "duration", "cached", "output", "error", "printed"]
OUTPUT_SHOWN = 4000  # characters of a task's printed output shown in the tasks table
_NAN_LAST = float("inf")


def _sort_keys(model: RunModel) -> dict[str, Any]:
    d, out = model.duration, model.output_bytes
    return {
        "order": None,
        "state": lambda i: STATE_RANK.get(model.state[i], 99),
        "duration (longest first)": lambda i: -d[i] if not math.isnan(d[i]) else _NAN_LAST,
        "attempts (most first)": lambda i: -model.attempts[i],
        "output size (largest first)": lambda i: -(out[i] or 0) if out[i] is not None else _NAN_LAST,
        "key": lambda i: model.keys[i],
    }


SORTS = ("order", "state", "duration (longest first)", "attempts (most first)", "output size (largest first)",
         "key")
STATE_RANK = {s: k for k, s in enumerate(("failed", "retrying", "running", "ready", "pending", "skipped",
                                          "cancelled", "completed"))}


def _problem(model: RunModel, i: int) -> str:
    if i in model.errors:
        return short_error(model.errors[i])
    return model.reasons.get(i, "")


def printed_html(model: RunModel, i: int, limit: int = OUTPUT_SHOWN) -> str:
    """What task ``i`` printed, folded (``<details>``), at most ``limit`` characters; the
    cut is said, and where the whole text is (``run.logs(key)``)."""
    key = model.keys[i]
    text = model.output_of(key)
    if not text:
        return ""
    lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    cut = ""
    if len(text) > limit:
        cut = (f'<div class="nbflow-truncated" style="color:#8d6e63">truncated: {len(text) - limit} more '
               f"characters; the whole text is <code>run.logs({esc(repr(key))})</code></div>")
        text = text[:limit]
    return (f'<details class="nbflow-printed" data-key="{esc(key)}"><summary>{lines} line'
            f'{"s" if lines != 1 else ""}</summary><pre style="font-size:11px;margin:2px 0;max-height:200px;'
            f'overflow:auto;background:#f7f7f7;padding:4px">{esc(text)}</pre>{cut}</details>')


def tasks_html(model: RunModel, sort: str = "order", limit: int = 300) -> str:
    """The tasks table (the columns of ``run.tasks`` a reader needs), sorted, first ``limit`` rows.

    Written by hand rather than with ``DataFrame.to_html``: it is re-rendered while a run
    goes, and this is ~20x faster for the same table.
    """
    n = len(model)
    key = _sort_keys(model).get(sort)
    rows = range(n) if key is None else sorted(range(n), key=key)
    td = '<td style="padding:1px 8px;text-align:{}">{}</td>'
    body = []
    for i in list(rows)[:limit]:
        state = shown_state(model.state[i], model.kinds[i])
        look = "cached" if state == "completed" and model.cached[i] else state
        fill = COLOURS.get(look, COLOURS["pending"])[0]
        cells = (
            f'<td style="padding:1px 8px;text-align:left;white-space:nowrap">{esc(model.keys[i])}</td>',
            td.format("left", esc(model.names[i])),
            f'<td style="padding:1px 8px;background:{fill}">{state}</td>',
            td.format("right", model.attempts[i]), td.format("right", fmt_seconds(model.duration[i])),
            td.format("center", "yes" if model.cached[i] else ""),
            td.format("right", fmt_bytes(model.output_bytes[i]) if model.output_bytes[i] is not None else ""),
            td.format("left", esc(_problem(model, i))),
            td.format("left", printed_html(model, i)),
        )
        body.append(f'<tr data-key="{esc(model.keys[i])}">{"".join(cells)}</tr>')
    head = "".join(f'<th style="padding:1px 8px;text-align:left">{c}</th>' for c in TASK_COLUMNS)
    more = (f'<div style="color:#78909c;font-size:12px">showing {limit} of {n} tasks; '
            "the full table is <code>nf.last_run().tasks</code></div>") if n > limit else ""
    return (f'<div style="font-size:12px;max-height:420px;overflow:auto"><table class="nbflow-tasks" '
            f'style="border-collapse:collapse"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}'
            f"</tbody></table></div>{more}")


def errors_html(model: RunModel, limit: int = 20) -> str:
    if not model.errors:
        return '<div style="color:#78909c;font-size:12px">No failed tasks.</div>'
    parts = []
    items = sorted(model.errors.copy().items())  # (a copy: see TextProgress.tick)
    for i, err in items[:limit]:
        parts.append(
            f'<div class="nbflow-error" data-key="{esc(model.keys[i])}" style="margin:6px 0">'
            f'<b style="color:#b91c1c">{esc(model.keys[i])}</b> failed after {model.attempts[i]} '
            f"attempt(s): {esc(short_error(err))}"
            f'<pre style="font-size:11.5px;background:#fff5f5;padding:6px;overflow:auto;max-height:300px">'
            f"{esc(format_error(err))}</pre></div>")
    if len(items) > limit:
        parts.append(f"<div>... and {len(items) - limit} more failed tasks (see run.errors()).</div>")
    return "".join(parts)


def summary_frame(model: RunModel) -> pd.DataFrame:
    """One row per function: how many tasks ended in each state, and their time."""
    rows: dict[str, dict[str, float]] = {}
    for i in range(len(model)):
        name = model.names[i]
        r = rows.setdefault(name, {"tasks": 0, **{s: 0 for s in ORDER}, "time_s": 0.0, "max_s": 0.0})
        r["tasks"] += 1
        s = model.state[i]
        r["cached" if s == "completed" and model.cached[i] else s] += 1
        d = model.duration[i]
        if not math.isnan(d):
            r["time_s"] += d
            r["max_s"] = max(r["max_s"], d)
    df = pd.DataFrame.from_dict(rows, orient="index")
    if df.empty:
        return pd.DataFrame(columns=["tasks"])
    keep = ["tasks"] + [s for s in ORDER if df[s].sum() > 0] + ["time_s", "max_s"]
    df = df[keep]
    df.index.name = "task"
    for c in keep[:-2]:
        df[c] = df[c].astype(int)
    return df.round(3)


def summary_text(model: RunModel) -> str:
    head = f"{model.status}: {progress_text(model)}"
    return head + "\n" + summary_frame(model).to_string()


def static_html(model: RunModel, svg: str, note: str | None = None) -> str:
    """The whole final view as one HTML fragment (what a saved notebook shows)."""
    n_err = len(model.errors)
    summary = summary_frame(model).to_html(border=0, classes="nbflow-summary")
    errors = (f'<details open><summary><b>Errors ({n_err})</b></summary>{errors_html(model)}</details>'
              if n_err else "")
    return (
        f'<div class="nbflow-static" data-status="{esc(model.status)}" style="font-family:{esc(SANS)}">'
        f"{progress_html(model, note)}"
        f'<div class="nbflow-graph-box" style="overflow:auto;max-height:640px;margin:4px 0">{svg}</div>'
        '<details><summary><b>Summary by task</b></summary>'
        f'<div style="font-size:12px">{summary}</div></details>'
        f'<details><summary><b>Tasks ({len(model)})</b></summary>{tasks_html(model, "state")}</details>'
        f"{errors}</div>"
    )
