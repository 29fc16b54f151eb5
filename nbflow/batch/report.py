"""``nbflow report``: one self-contained HTML file for a stored run or batch run.

Everything is inline — CSS, the SVG graph (the notebook room's renderer, fed from the
store by :mod:`nbflow.notebook.stored`), an SVG Gantt timeline, a small script that sorts the tasks
table — so the file opens anywhere with no network and no Jupyter: attach it to a mail,
drop it on a file share.  For a batch run the report shows the batch (notebook,
parameters, outputs) and then every workflow run it made.

:func:`render_html` is the entry point other rooms call (the dashboard serves it).
"""

from __future__ import annotations

import html
import json
import math
import os
from datetime import datetime, timezone
from typing import Any

from ..notebook.render import COLOURS, STATUS_COLOURS, fmt_bytes, fmt_seconds
from ..notebook.stored import error_text, model_of
from ..store.history import StoredRun, load_run
from ..store.store import Store, get_store
from . import records

GANTT_MAX = 400  # rows drawn in the timeline (the longest tasks first beyond that)

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:24px;color:#263238}
h1{font-size:20px;margin:0 0 6px} h2{font-size:16px;margin:22px 0 8px;border-bottom:1px solid #eceff1}
.badge{color:#fff;border-radius:3px;padding:1px 8px;font-weight:600;font-size:13px}
.meta{color:#607d8b;font-size:13px} .meta td{padding:1px 12px 1px 0}
table.kv td,table.kv th{padding:2px 10px;text-align:left;font-size:13px}
table.tasks{border-collapse:collapse;font-size:12px} table.tasks th{cursor:pointer;background:#eceff1;
padding:3px 8px;text-align:left;user-select:none;position:sticky;top:0} table.tasks td{padding:1px 8px}
table.tasks th.asc:after{content:' ▲'} table.tasks th.desc:after{content:' ▼'}
.scroll{max-height:520px;overflow:auto} pre{font-size:12px;background:#fff5f5;padding:8px;overflow:auto}
.box{overflow:auto;max-height:720px;border:1px solid #eceff1;padding:6px}
section.run{margin-top:26px;padding-top:6px;border-top:3px solid #cfd8dc}
"""

SORT_JS = """
document.querySelectorAll('table.tasks').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var asc=!th.classList.contains('asc');
      t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc')});
      th.classList.add(asc?'asc':'desc');
      var body=t.tBodies[0], rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=a.cells[col].getAttribute('data-v'), y=b.cells[col].getAttribute('data-v');
        var nx=parseFloat(x), ny=parseFloat(y), r;
        if(!isNaN(nx)&&!isNaN(ny)) r=nx-ny; else r=String(x).localeCompare(String(y));
        return asc?r:-r;});
      rows.forEach(function(r){body.appendChild(r)});
    });
  });
});
"""


def esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def _when(t: float | None) -> str:
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return "—"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#90a4ae")
    return f'<span class="badge nbflow-status" style="background:{colour}">{esc(status)}</span>'


def _kv(items: dict[str, Any], cls: str = "kv", as_json: bool = True) -> str:
    if not items:
        return '<div class="meta">none</div>'
    rows = "".join(
        f"<tr><th>{esc(k)}</th><td><code>{esc(json.dumps(v, default=str) if as_json else v)}</code></td></tr>"
        for k, v in items.items()
    )
    return f'<table class="{cls}">{rows}</table>'


def _look(state: str, cached: bool) -> str:
    return "cached" if state == "completed" and cached else state


def gantt_svg(model: Any) -> str:
    """Each task with a start as a bar from its start to its end, on one time axis."""
    idx = [i for i in range(len(model)) if not math.isnan(model.start[i])]
    if not idx:
        return '<div class="meta">No task ran (all were skipped or cancelled before starting).</div>'
    note = ""
    if len(idx) > GANTT_MAX:
        idx = sorted(idx, key=lambda i: -(model.duration[i] if not math.isnan(model.duration[i]) else 0))[
            :GANTT_MAX
        ]
        note = f'<div class="meta">the {GANTT_MAX} longest of {len(model)} tasks</div>'
    idx.sort(key=lambda i: model.start[i])
    t0 = min(model.start[i] for i in idx)
    ends = [model.start[i] + (model.duration[i] if not math.isnan(model.duration[i]) else 0) for i in idx]
    span = max(max(ends) - t0, 1e-3)
    label_w, width, row_h = 220, 720, 16
    height = row_h * len(idx) + 30
    parts = [
        f'<svg class="nbflow-gantt" xmlns="http://www.w3.org/2000/svg" width="{label_w + width + 20}" '
        f'height="{height}" font-family="monospace" font-size="11">'
    ]
    for k in range(5):  # time axis
        x = label_w + width * k / 4
        parts.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 18}" stroke="#eceff1"/>'
            f'<text x="{x:.1f}" y="{height - 4}" fill="#78909c" text-anchor="middle">'
            f"{esc(fmt_seconds(span * k / 4))}</text>"
        )
    for row, (i, end) in enumerate(zip(idx, ends, strict=True)):
        y = row * row_h + 2
        fill, stroke, _ = COLOURS.get(_look(model.state[i], model.cached[i]), COLOURS["pending"])
        x = label_w + width * (model.start[i] - t0) / span
        w = max(2.0, width * (end - model.start[i]) / span)
        label = model.keys[i] if len(model.keys[i]) <= 30 else model.keys[i][:29] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 11}" text-anchor="end" fill="#37474f">{esc(label)}</text>'
            f'<rect class="nbflow-bar" data-key="{esc(model.keys[i])}" x="{x:.1f}" y="{y}" '
            f'width="{w:.1f}" height="{row_h - 4}" rx="2" fill="{fill}" stroke="{stroke}">'
            f"<title>{esc(model.keys[i])}: {esc(model.state[i])}, "
            f"{esc(fmt_seconds(end - model.start[i]))}</title></rect>"
        )
    parts.append("</svg>")
    return note + "".join(parts)


def tasks_table(model: Any) -> str:
    head = ["key", "task", "state", "attempts", "start (s)", "duration", "cached", "output", "error / reason"]
    t0 = min((s for s in model.start if not math.isnan(s)), default=math.nan)
    body = []
    for i in range(len(model)):
        state, dur, ob = model.state[i], model.duration[i], model.output_bytes[i]
        fill = COLOURS.get(_look(state, model.cached[i]), COLOURS["pending"])[0]
        start = model.start[i] - t0 if not math.isnan(model.start[i]) else math.nan
        err = model.errors.get(i)
        problem = str(err).strip().splitlines()[-1] if err is not None else model.reasons.get(i, "")
        cells = [
            (model.keys[i], esc(model.keys[i])),
            (model.names[i], esc(model.names[i])),
            (state, f'<span style="background:{fill};padding:0 4px">{esc(state)}</span>'),
            (model.attempts[i], model.attempts[i]),
            ("" if math.isnan(start) else f"{start:.6f}", "" if math.isnan(start) else f"{start:.3f}"),
            ("" if math.isnan(dur) else f"{dur:.6f}", fmt_seconds(dur) if not math.isnan(dur) else ""),
            (int(model.cached[i]), "yes" if model.cached[i] else ""),
            ("" if ob is None else ob, fmt_bytes(ob) if ob is not None else ""),
            (problem, esc(problem)),
        ]
        body.append("<tr>" + "".join(f'<td data-v="{esc(v)}">{shown}</td>' for v, shown in cells) + "</tr>")
    ths = "".join(f"<th>{h}</th>" for h in head)
    return (
        f'<div class="scroll"><table class="tasks nbflow-tasks"><thead><tr>{ths}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def errors_section(model: Any) -> str:
    if not model.errors:
        return '<div class="meta">No failed tasks.</div>'
    out = []
    for i, err in sorted(model.errors.items()):
        out.append(
            f'<div class="nbflow-error"><b style="color:#b91c1c">{esc(model.keys[i])}</b> failed after '
            f"{model.attempts[i]} attempt(s)<pre>{esc(error_text(err))}</pre></div>"
        )
    return "".join(out)


def metrics(model: Any) -> dict[str, Any]:
    durs = [d for d in model.duration if not math.isnan(d)]
    busy = sum(durs)
    wall = max(model.finished_at - model.started_at, 0.0) if not math.isnan(model.started_at) else 0.0
    events = sorted(
        [(s, 1) for s in model.start if not math.isnan(s)]
        + [
            (s + d, -1)
            for s, d in zip(model.start, model.duration, strict=True)
            if not math.isnan(s) and not math.isnan(d)
        ],
        key=lambda e: (e[0], e[1]),
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    n_done = sum(1 for s in model.state if s == "completed")
    hits = sum(1 for s, c in zip(model.state, model.cached, strict=True) if s == "completed" and c)
    return {
        "tasks": len(model),
        "completed": n_done,
        "from cache": hits,
        "cache hit rate": f"{hits / n_done:.0%}" if n_done else "—",
        "task time (sum)": fmt_seconds(busy),
        "wall time": fmt_seconds(wall),
        "average parallelism": f"{busy / wall:.2f}" if wall > 0 else "—",
        "peak tasks running": peak,
        "output bytes": fmt_bytes(sum(b for b in model.output_bytes if b is not None)),
    }


def run_section(run: StoredRun, params: dict[str, Any]) -> str:
    from ..notebook.graphview import GraphView

    model = model_of(run)
    graph = GraphView(model)
    svg = graph.svg() if len(model) else '<div class="meta">empty workflow</div>'
    note = f'<div class="meta">{esc(graph.note)}</div>' if len(model) and graph.note else ""
    counts = ", ".join(f"{v} {k}" for k, v in sorted(run.counts.items()))
    err = f"<div><b>Run error:</b> <code>{esc(run.error)}</code></div>" if run.error else ""
    return (
        f'<section class="run nbflow-run" data-run="{esc(run.id)}">'
        f"<h1>{_badge(run.status)} workflow <b>{esc(run.name)}</b></h1>"
        f'<table class="meta"><tr><td>run</td><td><code>{esc(run.id)}</code></td></tr>'
        f"<tr><td>started</td><td>{_when(run.started_at)}</td></tr>"
        f"<tr><td>duration</td><td>{fmt_seconds(run.duration_s)}</td></tr>"
        f"<tr><td>backend</td><td>{esc(run.backend)} (workers: {esc(run.workers or 'no cap')})</td></tr>"
        f"<tr><td>tasks</td><td>{esc(counts)}</td></tr></table>{err}"
        f"<h2>Parameters</h2>{_kv(params)}"
        f'<h2>Graph</h2><div class="box nbflow-graph-box">{svg}</div>{note}'
        f'<h2>Timeline</h2><div class="box nbflow-gantt-box">{gantt_svg(model)}</div>'
        f"<h2>Metrics</h2>{_kv(metrics(model), as_json=False)}"
        f"<h2>Tasks ({len(model)})</h2>{tasks_table(model)}"
        f"<h2>Errors ({len(model.errors)})</h2>{errors_section(model)}"
        "</section>"
    )


def _outputs_section(store: Store, owner: str) -> str:
    rows = store.journal.query(
        "SELECT name, type, size, preview FROM outputs WHERE owner = ? ORDER BY created", (owner,)
    )
    if not rows:
        return '<div class="meta">none recorded (nf.output)</div>'
    body = "".join(
        f"<tr><th>{esc(n)}</th><td>{esc(t)}</td><td>{fmt_bytes(s)}</td><td><code>{esc(p)}</code></td></tr>"
        for n, t, s, p in rows
    )
    return f'<table class="kv"><tr><th>name</th><th>type</th><th>size</th><th>value</th></tr>{body}</table>'


def _resolve_store(store: Any) -> Store:
    if isinstance(store, Store):
        return store
    if store is None:
        return records.require_store()
    got = get_store(os.fspath(store), warn=False)
    if got is None:
        return records.require_store(os.fspath(store))
    return got


def render_html(run_id: str, store: Any = None) -> str:
    """The self-contained HTML report of workflow run or batch run ``run_id`` (a unique
    prefix is enough).  ``store``: a Store, a store directory, or None for the current one.

    Raises ``KeyError`` when no such run is in the store."""
    st = _resolve_store(store)
    params = records.params_of_runs(st)
    batch = records.batch(st, run_id) if run_id.startswith("b") else None
    if batch is not None:
        title = f"batch {batch['id']}"
        runs = [load_run(r, home=st.home) for r in records.runs_of_batch(st, batch["id"])]
        err = f"<div><b>Error:</b> <code>{esc(batch['error'])}</code></div>" if batch["error"] else ""
        head = (
            f'<section class="nbflow-batch" data-batch="{esc(batch["id"])}">'
            f"<h1>{_badge(batch['status'])} notebook "
            f"<b>{esc(os.path.basename(batch['notebook'] or ''))}</b></h1>"
            f'<table class="meta"><tr><td>batch</td><td><code>{esc(batch["id"])}</code></td></tr>'
            f"<tr><td>notebook</td><td>{esc(batch['notebook'])}</td></tr>"
            f"<tr><td>output notebook</td><td>{esc(batch['output'])}</td></tr>"
            f"<tr><td>started</td><td>{_when(batch['start'])}</td></tr>"
            f"<tr><td>duration</td><td>{fmt_seconds(batch['duration_s'] or math.nan)}</td></tr>"
            f"<tr><td>workflow runs</td><td>{len(runs)}</td></tr></table>{err}"
            f"<h2>Parameters</h2>{_kv(batch['parameters'])}<h2>Options</h2>{_kv(batch['options'])}"
            f"<h2>Outputs</h2>{_outputs_section(st, batch['id'])}</section>"
        )
        body = head + "".join(run_section(r, params.get(r.id, {})) for r in runs)
    else:
        run = load_run(run_id, home=st.home)
        title = f"run {run.id} ({run.name})"
        body = run_section(run, params.get(run.id, {}))
        outs = st.journal.query("SELECT COUNT(*) FROM outputs WHERE run_id = ?", (run.id,))[0][0]
        if outs:
            body += f"<h2>Outputs</h2>{_outputs_section(st, run.id)}"
    made = _when(datetime.now(timezone.utc).timestamp())
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>nbflow report: {esc(title)}</title><style>{CSS}</style></head><body>"
        f'{body}<p class="meta">nbflow report, written {made}.</p>'
        f"<script>{SORT_JS}</script></body></html>"
    )


class InlineReport:
    """The report of a stored run, shown inline in Jupyter (``display(InlineReport(id))``
    or as a cell's last value).  It sits in an ``<iframe srcdoc=...>`` so that the report's
    page styles and script stay inside it and do not restyle the notebook."""

    def __init__(self, run_id: str, store: Any = None, height: int = 900) -> None:
        self.html = render_html(run_id, store)
        self.height = height

    def _repr_html_(self) -> str:
        return (
            f'<iframe class="nbflow-report" srcdoc="{esc(self.html)}" style="width:100%;'
            f'height:{self.height}px;border:1px solid #eceff1"></iframe>'
        )


def display_report(run_id: str, store: Any = None, height: int = 900) -> InlineReport:
    """The report of workflow run or batch run ``run_id``, for inline display in Jupyter."""
    return InlineReport(run_id, store, height)
