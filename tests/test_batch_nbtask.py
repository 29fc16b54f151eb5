"""nf.notebook: notebooks as tasks of a workflow (each in its own kernel, via `nbflow run`).

A DAG of three notebooks (prep -> fit, prep -> describe): the second run is served from the
cache without starting a kernel; editing one notebook re-runs it and only what depends on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from batch_helpers import query, write_notebook

import nbflow as nf

PREP = [
    'import nbflow as nf\nn = nf.param("n", 3)',
    'import pandas as pd\nnf.output("table", pd.DataFrame({"x": range(n)}))\nnf.output("n", n)',
]
FIT = [
    'import nbflow as nf\nprep = nf.param("prep")\nscale = nf.param("scale", 1)',
    'nf.output("score", float(prep["table"]["x"].sum()) * scale)',
]
DESCRIBE = ['import nbflow as nf\nprep = nf.param("prep")', 'nf.output("rows", len(prep["table"]))']


def _flow(d: Path) -> nf.Workflow:
    with nf.Workflow("notebooks") as wf:
        prep = nf.notebook(d / "prep.ipynb", parameters={"n": 4}, outputs=["table", "n"])
        nf.notebook(d / "fit.ipynb", parameters={"prep": prep, "scale": 2})
        nf.notebook(d / "describe.ipynb", parameters={"prep": prep}, outputs=["rows"])
    return wf


def _write(d: Path, fit_cells: list[str] = FIT) -> None:
    write_notebook(d / "prep.ipynb", PREP[1:], parameters=PREP[0])
    write_notebook(d / "fit.ipynb", fit_cells[1:], parameters=fit_cells[0])
    write_notebook(d / "describe.ipynb", DESCRIBE[1:], parameters=DESCRIBE[0])


def test_notebook_dag_caches_and_reruns_only_the_edited_notebook_and_dependents(tmp_path: Path) -> None:
    _write(tmp_path)
    first = _flow(tmp_path).run()
    assert first["fit-0"]["score"] == 12.0  # (0+1+2+3) * 2, through prep's DataFrame
    assert first["describe-0"]["rows"] == 4
    assert list(first["prep-0"]) == ["table", "n"]
    kernels_before = query("SELECT COUNT(*) FROM batches")[0][0]
    assert kernels_before == 3

    second = _flow(tmp_path).run()
    assert second.tasks["cached"].all()  # served from the cache ...
    assert query("SELECT COUNT(*) FROM batches")[0][0] == 3  # ... without running any notebook
    assert second["fit-0"]["score"] == 12.0

    edited = [FIT[0], 'nf.output("score", float(prep["table"]["x"].sum()) * scale + 1)']
    _write(tmp_path, edited)
    third = _flow(tmp_path).run()
    cached = third.tasks.set_index("key")["cached"]
    assert cached["prep-0"] and cached["describe-0"] and not cached["fit-0"]
    assert third["fit-0"]["score"] == 13.0
    assert query("SELECT COUNT(*) FROM batches")[0][0] == 4  # only fit ran


def test_failing_or_missing_notebook_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(nf.NotebookFailed, match="no notebook"):
        nf.notebook(tmp_path / "nope.ipynb")
    write_notebook(tmp_path / "bad.ipynb", ["raise RuntimeError('broken input')"])
    with nf.Workflow("bad") as wf:
        nf.notebook(tmp_path / "bad.ipynb")
    run = wf.run(raise_on_error=False)
    err = run.errors()["bad-0"]
    assert isinstance(err, nf.NotebookFailed) and "broken input" in str(err)
    write_notebook(tmp_path / "quiet.ipynb", ["x = 1"])
    with pytest.raises(nf.NotebookFailed, match="did not record the outputs"):
        nf.notebook(tmp_path / "quiet.ipynb", outputs=["x"])
