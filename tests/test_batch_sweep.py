"""``nbflow sweep``: a grid of real batch runs (CLI subprocesses, real kernels), one failing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from batch_helpers import cli, query, write_notebook

from nbflow.batch.runner import BatchError
from nbflow.batch.sweep import from_csv, grid

PARAMS = 'import nbflow as nf\nalpha = nf.param("alpha", 1.0)\nn = nf.param("n", 1)'
BODY = """
if n == 0:
    raise ValueError("n must be positive")

@nf.task
def score(alpha, n):
    return alpha * n
"""
FLOW = "%%workflow point\ns = score(alpha, n)"
OUT = 'nf.output("score", s)\nnf.output("label", f"a={alpha}")'


def test_grid_and_csv_points(tmp_path: Path) -> None:
    assert grid([["alpha", "0.1", "0.2"], ["n", "10", "x"]], {"k": 1}) == [
        {"k": 1, "alpha": 0.1, "n": 10},
        {"k": 1, "alpha": 0.1, "n": "x"},
        {"k": 1, "alpha": 0.2, "n": 10},
        {"k": 1, "alpha": 0.2, "n": "x"},
    ]
    csv = tmp_path / "p.csv"
    csv.write_text("alpha,n\n0.5,3\n0.25,4\n")
    assert from_csv(str(csv), {}) == [{"alpha": 0.5, "n": 3}, {"alpha": 0.25, "n": 4}]
    with pytest.raises(BatchError, match="at least one value"):
        grid([["alpha"]], {})
    bad = tmp_path / "bad.csv"
    bad.write_text("not a name,n\n1,2\n")
    with pytest.raises(BatchError, match="not parameter names"):
        from_csv(str(bad), {})


def test_sweep_runs_every_point_collects_outputs_and_survives_a_failure(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "s.ipynb", [BODY, FLOW, OUT], parameters=PARAMS)
    res = cli(
        "sweep",
        str(nb),
        "-p",
        "alpha",
        "0.5",
        "-p",
        "n",
        "0",
        "10",
        "20",
        "--workers",
        "2",
        "--out-dir",
        "out",
        cwd=tmp_path,
        timeout=400,
    )
    assert res.returncode == 1, res.stderr  # one point failed
    assert "2/3 points completed" in res.stderr
    table = pd.read_csv(tmp_path / "out" / "sweep.csv").sort_values("point")
    assert table["status"].tolist() == ["failed", "completed", "completed"]
    assert table["n"].tolist() == [0, 10, 20]
    assert table["score"].tolist()[1:] == [5.0, 10.0]
    assert table["label"].tolist()[1:] == ["a=0.5", "a=0.5"]
    assert "n must be positive" in table["error"].iloc[0]
    for k in range(3):
        assert (tmp_path / "out" / f"s-{k:03d}.ipynb").exists()  # failed points keep their notebook too
    (sweep_id, status, error) = query("SELECT id, status, error FROM batches WHERE kind = 'sweep'")[0]
    assert status == "failed" and "1 of 3" in error
    points = query("SELECT parameters, status FROM batches WHERE parent = ? ORDER BY start", (sweep_id,))
    assert sorted(json.loads(p)["n"] for p, _ in points) == [0, 10, 20]
