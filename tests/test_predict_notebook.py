"""The headless progress line shows the ETA once there is history (a real kernel, nbclient)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
import nbharness as h

pytestmark = pytest.mark.timeout(240)

CELLS = [
    "import nbflow as nf\nimport time",
    "@nf.task\ndef step(i):\n    time.sleep(0.03)\n    return i",
    "%%workflow eta --workers 2 --no-cache\nparts = [step(i) for i in range(40)]",
    "%%workflow eta --workers 2 --no-cache\nparts = [step(i) for i in range(40)]",
    "fc = nf.forecast(nf.last_run().workflow, workers=[1, 2, 4])\nprint(fc)\n"
    "rep = nf.last_run().prediction_report()\nprint(rep)",
    "%%workflow eta --forecast --workers 3\nparts = [step(i) for i in range(40)]",
    "assert parts == list(range(40)), parts  # --forecast ran nothing and bound nothing new\n"
    "print('forecast ok')",
    "@nf.task\ndef fresh(x):\n    return x",
    "%%workflow never_ran --forecast\nfresh(step(1))",
    "@nf.task\ndef listing(n):\n    return list(range(n))",
    "%%workflow mapped --forecast\nout = step.map(listing(12))",
    "%%workflow mapped --no-cache --quiet\nout = step.map(listing(12))",
    "%%workflow mapped --forecast --workers 2\nout = step.map(listing(12))",
]


def test_progress_lines_carry_the_eta_once_history_exists(tmp_path: Path) -> None:
    nb = new_notebook(cells=[new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.validate(nb)
    h.execute(nb, tmp_path)
    h.assert_no_errors(nb)
    first = h.stream(nb.cells[2]).splitlines()
    second = h.stream(nb.cells[3]).splitlines()
    assert not any("ETA" in line for line in first)  # no history yet: no estimate
    decile_lines = [line for line in second if re.match(r"\[nbflow\]\s+\d+% ", line)]
    assert decile_lines and all("ETA" in line and "80%:" in line for line in decile_lines), second
    out = h.text(nb.cells[4])
    assert "forecast: 40 tasks" in out and "recommended workers" in out
    assert "prediction report" in out and "step: 40 ran" in out
    shown = nb.cells[5]
    assert "forecast: 40 tasks" in h.text(shown) and "(nothing was run)" in h.text(shown)
    assert 'class="nbflow-forecast"' in h.html(shown) and "   3 workers:" in h.text(shown)
    assert "forecast ok" in h.text(nb.cells[6])
    assert "no history: fresh" in h.text(nb.cells[8])
    # a map over a result: left out and said so before it ever ran, then its 12 items counted
    assert "not counted" in h.text(nb.cells[10]) and "step.map-0" in h.text(nb.cells[10])
    assert "step.map-0 (12 items, as in its last run)" in h.text(nb.cells[12])
    assert "forecast: 13 tasks" in h.text(nb.cells[12])  # listing and the 12 items


FASTER = [
    "import nbflow as nf\nimport time\nSECONDS = 0.8\n"
    "import nbflow.predict.eta as eta\n"
    "eta.ETA_BUDGET = 1.0  # (an estimate's cost, slow on a loaded machine, is not what is tested)",
    "@nf.task\ndef slow_then_fast(i):\n    time.sleep(SECONDS)\n    return i",
    "%%workflow pace --workers 2 --no-cache --quiet\nparts = [slow_then_fast(i) for i in range(20)]",
    "SECONDS = 0.2  # the same tasks, four times faster than their history",
    "%%workflow pace --workers 2 --no-cache\nparts = [slow_then_fast(i) for i in range(20)]",
]
_UNIT = {"ms": 0.001, "s": 1.0, "min": 60.0}


def _seconds(text: str) -> float:
    value, unit = text.split()
    return float(value) * _UNIT[unit]


def test_the_progress_lines_eta_follows_a_run_faster_than_its_history(tmp_path: Path) -> None:
    """A 2 s run whose history says 8 s: the ETA of its last progress lines comes from the
    tasks that finished by then, not from its first estimate counted down by the clock
    (which said seconds were left with two short tasks to go)."""
    nb = new_notebook(cells=[new_code_cell(c) for c in FASTER])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    h.execute(nb, tmp_path)
    h.assert_no_errors(nb)
    line = re.compile(r"\[nbflow\]\s+(\d+)% .* in ([\d.]+ (?:ms|s|min)), ETA ([\d.]+ (?:ms|s|min)) \(80%")
    seen = [(int(m[1]), _seconds(m[2]), _seconds(m[3]))
            for m in map(line.match, h.stream(nb.cells[4]).splitlines()) if m]
    assert len(seen) >= 2, h.stream(nb.cells[4])
    (_, t0, first), (_, t1, last) = seen[0], seen[-1]
    counted_down = first - (t1 - t0)
    assert last < 0.5 * counted_down, seen
