"""A run written by another process, shown in a real kernel and by ``nbflow show``.

A script (its own process) runs a workflow with a map over a Ref, a failed item and
skipped nodes.  In a kernel started afterwards, ``%nbflow show RUN_ID`` draws it (static
HTML: header, graph, tasks with what they printed), ``nbflow.notebook.show(run,
widget=True)`` gives the widget with the static copy, and ``nf.load_run(id).explain``
answers; ``nbflow show RUN_ID`` prints the same counts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
import nbharness as h

pytestmark = pytest.mark.timeout(300)

MAKE_RUN = '''
import nbflow as nf

@nf.task
def items(n):
    return list(range(n))

@nf.task
def work(x):
    print(f"item {x} here")
    if x == 2:
        raise ValueError("bad item 2")
    return x

@nf.task
def total(xs):
    return sum(xs)

with nf.Workflow("elsewhere") as wf:
    total(work.map(items(4)))
print(wf.run(raise_on_error=False).id)
'''


def test_a_run_of_another_process_in_a_kernel_and_on_the_command_line(tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-c", MAKE_RUN], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    run_id = made.stdout.strip().splitlines()[-1]
    nb = h.notebook([
        "import nbflow as nf, json",
        f"%nbflow show {run_id}",
        "from nbflow.notebook import show\n"
        f"show(nf.load_run({run_id!r}), widget=True)",
        f"run = nf.load_run({run_id!r})\n"
        "print(json.dumps({'counts': run.task_counts.as_row(), 'errors': list(run.errors()),"
        " 'why': run.explain('work.map-0[1]').reason, 'logs': run.logs('work.map-0[1]')}))",
    ])
    h.execute(nb, tmp_path, timeout=180)
    h.assert_no_errors(nb)
    shown = h.html(nb.cells[1])
    assert 'class="nbflow-graph"' in shown and 'data-status="failed"' in shown
    m = re.search(r'data-done="(\d+)" data-total="(\d+)"', shown)
    assert m and m.groups() == ("7", "7")  # 3 traced nodes + 4 items added while running
    assert '<details class="nbflow-printed" data-key="work.map-0[1]">' in shown
    assert "item 1 here" in shown
    assert "bad item 2" in shown  # the error, with its text
    widget_out = [o for o in nb.cells[2].outputs if o.output_type == "display_data"]
    assert len(widget_out) == 1
    data = widget_out[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in data  # the widget ...
    assert 'data-done="7" data-total="7"' in data["text/html"]  # ... with its static copy
    facts = json.loads(h.stream(nb.cells[3]))
    assert facts == {"counts": {"tasks": 7, "completed": 4, "cached": 0, "failed": 1, "skipped": 2,
                                "cancelled": 0},
                     "errors": ["work.map-0[2]"], "why": facts["why"], "logs": "item 1 here\n"}
    assert facts["why"].startswith("never ran")  # (a -c script: fingerprinted from bytecode, it says)
    cli = subprocess.run([sys.executable, "-m", "nbflow.cli", "show", run_id], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert f"run {run_id}  workflow elsewhere  failed" in cli.stdout
    assert "elsewhere: 4/7 completed, 1 failed, 2 skipped in" in cli.stdout
    assert "work.map-0[2] failed:" in cli.stdout and "bad item 2" in cli.stdout
