"""``nf.show``: the final view of a live or stored run, from the one public namespace.

In a real kernel, ``nf.show()`` shows the last run, ``nf.show(run, widget=True)`` the widget
with its static HTML copy, and ``nf.show(nf.load_run(id), widget=False)`` the static HTML
alone.  Outside a notebook, ``import nbflow`` stays importable without IPython and
ipywidgets: the export imports them only when called.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
import nbharness as h

pytestmark = pytest.mark.timeout(300)


def test_nf_show_in_a_kernel_live_and_stored(tmp_path: Path) -> None:
    nb = h.notebook([
        "import nbflow as nf\n"
        "@nf.task\n"
        "def double(x):\n"
        "    return 2 * x\n"
        "with nf.Workflow('shown') as wf:\n"
        "    double(double(3))\n"
        "run = wf.run()\n"
        "print(run.id)",
        "nf.show()",
        "nf.show(run, widget=True)",
        "nf.show(nf.load_run(run.id), widget=False)",
        "import json; print(json.dumps({'in_all': 'show' in nf.__all__, "
        "'same': nf.show is __import__('nbflow.notebook', fromlist=['show']).show}))",
    ])
    h.execute(nb, tmp_path, timeout=180)
    h.assert_no_errors(nb)
    # no argument: the last run, shown as text-mode HTML under nbclient (nobody renders widgets)
    last = h.html(nb.cells[1])
    assert 'class="nbflow-graph"' in last and 'data-done="2" data-total="2"' in last
    widget_out = [o for o in nb.cells[2].outputs if o.output_type == "display_data"]
    assert len(widget_out) == 1
    data = widget_out[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in data  # the widget ...
    assert 'data-done="2" data-total="2"' in data["text/html"]  # ... with its static copy
    stored = [o for o in nb.cells[3].outputs if o.output_type == "display_data"]
    assert len(stored) == 1
    assert "application/vnd.jupyter.widget-view+json" not in stored[0]["data"]
    assert 'data-done="2" data-total="2"' in stored[0]["data"]["text/html"]
    assert json.loads(h.stream(nb.cells[4])) == {"in_all": True, "same": True}


BLOCKED = '''
import sys
sys.modules["ipywidgets"] = None  # importing it now raises ImportError
import nbflow as nf
assert callable(nf.show) and "show" in nf.__all__
assert "IPython" not in sys.modules  # nothing of the notebook stack was imported
print("ok")
'''


def test_import_nbflow_with_show_needs_no_ipywidgets(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
