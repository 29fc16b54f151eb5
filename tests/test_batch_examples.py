"""example_notebooks/batch/ run through the CLI, as CI runs them: two chained parameterised
notebooks (prep -> train), a sweep of train, and the same chain as nf.notebook tasks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from batch_helpers import cli

import nbflow as nf

EXAMPLES = Path(__file__).resolve().parents[1] / "example_notebooks" / "batch"


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "batch"
    d.mkdir()
    for name in ("prep.ipynb", "train.ipynb", "pipeline.py"):
        shutil.copy(EXAMPLES / name, d / name)
    return d


def test_chained_notebooks_and_a_sweep_through_the_cli(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    prep = cli("run", str(d / "prep.ipynb"), "-p", "n_rows", "400", "-p", "seed", "2", cwd=tmp_path)
    assert prep.returncode == 0, prep.stderr
    prep_id = prep.stdout.split()[-1]
    assert nf.outputs(prep_id)["rows"] > 300
    train = cli("run", str(d / "train.ipynb"), "-p", "prep", prep_id, "-p", "alpha", "0.5", cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    assert nf.outputs(train.stdout.split()[-1])["r2"] > 0.9
    sweep = cli(
        "sweep",
        str(d / "train.ipynb"),
        "-p",
        "prep",
        prep_id,
        "-p",
        "alpha",
        "0.1",
        "100",
        "--workers",
        "2",
        "--out-dir",
        str(tmp_path / "sw"),
        cwd=tmp_path,
        timeout=400,
    )
    assert sweep.returncode == 0, sweep.stderr
    table = pd.read_csv(tmp_path / "sw" / "sweep.csv").sort_values("alpha")
    assert table["status"].tolist() == ["completed", "completed"]
    assert table["r2"].iloc[0] > table["r2"].iloc[1]  # heavy shrinkage fits worse


def test_pipeline_script_chains_the_notebooks_as_tasks(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    res = subprocess.run(
        [sys.executable, str(d / "pipeline.py")], cwd=tmp_path, capture_output=True, text=True, timeout=400
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "alpha=0.1: r2=" in res.stdout and "alpha=10.0: r2=" in res.stdout
    again = subprocess.run(
        [sys.executable, str(d / "pipeline.py")], cwd=tmp_path, capture_output=True, text=True, timeout=400
    )
    assert again.returncode == 0, again.stderr[-3000:]
    states = [ln.split() for ln in again.stdout.splitlines() if ln.strip().startswith(("prep-", "train-"))]
    assert len(states) == 3 and all(s[2] == "True" for s in states)  # all three served from the cache
