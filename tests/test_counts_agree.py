"""Every view counts a run's tasks the same way (``nbflow.core.counting``).

One run with a map over a Ref (its 70 items are added while the run goes), a failed item
and two skipped nodes (the map's collector and the task after it), made by ``%%workflow``
in a real kernel.  The widget header, the headless progress line, the group tooltips of the
drawn graph, ``%nbflow runs``, ``nbflow runs`` and the dashboard's run list must all show
the same numbers, and the run lists put the newest run first.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
import nbharness as h

pytestmark = pytest.mark.timeout(300)

TASKS = '''
import nbflow as nf, json

@nf.task
def items(n):
    return list(range(n))

@nf.task
def work(x):
    if x == 3:
        raise ValueError("no 3")
    return x

@nf.task
def total(xs):
    return sum(xs)
'''

RUN = '''%%workflow counted
t = total(work.map(items(70)))'''

FIRST = '''%%workflow earlier
e = items(2)'''

WIDGET = '''
from nbflow.notebook import model_of_run
from nbflow.notebook.widget import RunWidget
print("HEADER", RunWidget(model_of_run(nf.last_run())).progress.value)
'''

RUNS = '''
listed = %nbflow runs
print("RUNS", listed[["run_id" if "run_id" in listed else "id", "name", "tasks", "completed", "cached",
                       "failed", "skipped", "cancelled"]].to_json(orient="records"))
'''

WANT = {"tasks": 73, "completed": 70, "failed": 1, "skipped": 2}


def header_counts(fragment: str) -> dict[str, int]:
    """Total, done and per-state chips of a progress header (render.progress_html)."""
    m = re.search(r'class="nbflow-progress"[^>]*data-done="(\d+)" data-total="(\d+)"', fragment)
    assert m, fragment[:300]
    chips = dict((s, int(n)) for s, n in re.findall(
        r'class="nbflow-count" data-state="([a-z]+)"[^>]*>(?:<span[^>]*></span>)?(\d+)', fragment))
    return {"tasks": int(m.group(2)), "done": int(m.group(1)), **chips}


def tooltip_counts(svg: str) -> dict[str, int]:
    """The drawn graph's counts: per single node its state, per group its tooltip's counts."""
    out: dict[str, int] = {"tasks": 0}
    for attrs, title in re.findall(r'<g class="nbflow-node"([^>]*)><title>([^<]*)</title>', svg):
        title = html.unescape(title)
        if 'data-kind="task"' in attrs:
            state = re.search(r'data-state="([a-z]+)"', attrs).group(1)  # type: ignore[union-attr]
            out[state] = out.get(state, 0) + 1
            out["tasks"] += 1
            continue
        head, phrase = title.splitlines()[:2]
        out["tasks"] += int(re.search(r": (\d+) tasks$", head).group(1))  # type: ignore[union-attr]
        for n, state in re.findall(r"(\d+) ([a-z]+)(?: \(\d+ from cache\))?", phrase):
            out[state] = out.get(state, 0) + int(n)
    return out


def test_header_progress_tooltips_and_both_run_lists_agree(tmp_path: Path) -> None:
    nb = h.notebook([TASKS, FIRST, RUN, WIDGET, RUNS])
    h.execute(nb, tmp_path, timeout=180)
    run_cell = nb.cells[2]
    assert [e.ename for e in h.errors(run_cell)] == ["WorkflowFailed"]
    for c in (nb.cells[0], nb.cells[1], nb.cells[3], nb.cells[4]):
        assert not h.errors(c), h.text(c)

    # 1. the headless progress line (what papermill and nbclient show)
    final = [ln for ln in h.stream(run_cell).splitlines() if ln.startswith("[nbflow] failed:")]
    assert final, h.stream(run_cell)
    m = re.search(r"counted: (\d+)/(\d+) completed, (\d+) failed, (\d+) skipped in", final[-1])
    assert m, final[-1]
    line = {"completed": int(m.group(1)), "tasks": int(m.group(2)), "failed": int(m.group(3)),
            "skipped": int(m.group(4))}
    assert line == WANT

    # 2. the widget header (the real RunWidget of the same run, in the kernel)
    header = header_counts(h.stream(nb.cells[3]))
    assert {k: header[k] for k in WANT} == WANT and header["done"] == 73

    # 3. the group tooltips of the drawn graph (73 nodes: the map's items fold into a group)
    static = h.html(run_cell)
    assert 'data-level="maps"' in static
    assert header_counts(static) == header  # the static header is the widget's
    svg = static[static.index("<svg"):static.index("</svg>")]
    assert tooltip_counts(svg) == {k: header[k] for k in WANT}
    assert "work ×70: 71 tasks" in html.unescape(svg)  # 70 items and their collector

    # 4. %nbflow runs (in the kernel), newest first
    listed = json.loads(h.stream(nb.cells[4]).split("RUNS", 1)[1])
    assert [r["name"] for r in listed[:2]] == ["counted", "earlier"]
    assert {k: listed[0][k] for k in WANT} == WANT and listed[0]["cancelled"] == 0

    # 5. nbflow runs (the command), newest first
    res = subprocess.run([sys.executable, "-m", "nbflow.cli", "runs", "--json"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cli = json.loads(res.stdout)
    assert [r["name"] for r in cli[:2]] == ["counted", "earlier"]
    assert {k: cli[0][k] for k in WANT} == WANT

    # 6. the dashboard's run list (what /nbflow/api/runs serves), newest first
    from nbflow.server.reader import list_runs

    dash = list_runs(Path(os.environ["NBFLOW_HOME"]))["runs"]
    assert [r["name"] for r in dash[:2]] == ["counted", "earlier"]
    assert {k: dash[0][k] for k in WANT} == WANT and dash[0]["done"] == 73
