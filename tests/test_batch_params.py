"""nf.param, nf.output/nf.outputs and the run-defaults hook, in this process (no kernel)."""

from __future__ import annotations

import json

import pytest
from batch_helpers import query

import nbflow as nf
from nbflow.params import env, params


@pytest.fixture(autouse=True)
def _fresh_params(monkeypatch):
    monkeypatch.setattr(params, "_declared", {})
    for k in env.ALL:
        monkeypatch.delenv(k, raising=False)


def test_param_takes_injected_value_else_default_and_refuses_bad_names(monkeypatch) -> None:
    assert nf.param("alpha", 0.1) == 0.1
    monkeypatch.setenv(env.PARAMS, json.dumps({"alpha": 0.7, "n": 5}))
    assert nf.param("alpha", 0.1) == 0.7
    assert nf.param("n", 3) == 5
    assert nf.param("other", "x") == "x"
    assert params.declared() == {"alpha": 0.7, "n": 5, "other": "x"}
    with pytest.raises(nf.ParamError, match="identifier"):
        nf.param("not a name", 1)


@nf.task
def base(n):
    return list(range(n))


@nf.task
def weighted(xs):
    return [x * WEIGHT for x in xs]


@nf.task
def size(xs):
    return len(xs)


WEIGHT = 1.0


def test_param_is_recorded_with_runs_and_enters_only_the_cache_keys_that_use_it(monkeypatch) -> None:
    global WEIGHT

    def run_once(weight: float) -> nf.Run:
        global WEIGHT
        monkeypatch.setenv(env.PARAMS, json.dumps({"weight": weight}))
        WEIGHT = nf.param("weight", 1.0)
        with nf.Workflow("params") as wf:
            xs = base(4)
            weighted(xs)
            size(xs)
        return wf.run()

    first = run_once(2.0)
    assert first.tasks.set_index("key")["cached"].tolist() == [False, False, False]
    second = run_once(3.0)
    cached = second.tasks.set_index("key")["cached"]
    assert cached["base-0"] and cached["size-0"] and not cached["weighted-0"]
    assert "WEIGHT" in second.tasks.set_index("key")["reason"]["weighted-0"]
    rows = dict(query("SELECT name, value FROM run_params WHERE run_id = ?", (second.id,)))
    assert json.loads(rows["weight"]) == 3.0
    runs = nf.runs()
    assert set(runs["id"]) == {first.id, second.id}


def test_output_belongs_to_the_latest_run_and_reads_back(tmp_path) -> None:
    import pandas as pd

    with nf.Workflow("outs") as wf:
        size([1, 2])
    run = wf.run()
    nf.output("score", 0.93)
    nf.output("table", pd.DataFrame({"a": [1, 2]}))
    got = nf.outputs(run.id)
    assert got["score"] == 0.93 and got["table"]["a"].tolist() == [1, 2]
    with pytest.raises(nf.OutputError, match="no outputs"):
        nf.outputs("nope")
    with pytest.raises(nf.OutputError, match="non-empty string"):
        nf.output("", 1)


def test_output_inside_a_batch_belongs_to_the_batch(monkeypatch) -> None:
    monkeypatch.setenv(env.BATCH_ID, "b-test-1")
    nf.output("answer", 42)
    assert nf.outputs("b-test-1") == {"answer": 42}
    assert nf.outputs("b-test") == {"answer": 42}  # a unique prefix is enough


def test_run_defaults_fill_only_options_left_at_their_defaults(monkeypatch) -> None:
    with nf.Workflow("d") as wf:
        size([1])
    assert env.run_defaults(wf, None, "local", True, None) == (None, "local", True, None)
    monkeypatch.setenv(env.WORKERS, "3")
    monkeypatch.setenv(env.BACKEND, "process")
    monkeypatch.setenv(env.NO_CACHE, "1")
    monkeypatch.setenv(env.RERUN, json.dumps(["size", "missing"]))
    assert env.run_defaults(wf, None, "local", True, None) == (3, "process", False, ["size"])
    assert env.run_defaults(wf, 1, "dask", True, ["x"]) == (1, "dask", False, ["x"])  # explicit wins
    monkeypatch.setenv(env.BACKEND, "local")
    run = wf.run()
    assert run.workers == 3 and run.cache is False


def test_a_version_1_store_gains_the_batch_tables_and_keeps_its_runs(tmp_path) -> None:
    import sqlite3

    from nbflow.store import journal
    from nbflow.store.store import get_store

    home = tmp_path / "old"
    home.mkdir()
    db = sqlite3.connect(home / "journal.sqlite")
    for sql in journal.MIGRATIONS[1]:
        db.execute(sql)
    db.execute("INSERT INTO runs(id, name, status) VALUES('r1', 'old', 'completed')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = get_store(home)
    assert store is not None
    tables = {r[0] for r in store.journal.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"batches", "batch_runs", "run_params", "outputs"} <= tables
    assert store.journal.query("SELECT id FROM runs") == [("r1",)]


SHELL_SCRIPT = r"""
import json
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()

def cell(src):
    shell.run_cell(src, store_history=True).raise_error()  # as a kernel runs cells

cell("import nbflow as nf")
cell("@nf.task\ndef scaled(x):\n    return x * alpha\n")
cell("%%workflow cellp -p alpha 0.5 -p tag run1 --quiet\ny = scaled(4)")
import nbflow as nf
out = {"y": shell.user_ns["y"], "alpha": shell.user_ns["alpha"], "run": nf.last_run().id}
cell("beta = 7")  # a plain global is not a parameter value
out["plain"] = shell.run_cell("nf.param('beta', 1)", store_history=True).result
cell("# Parameters\nbeta = 9\n")  # what papermill injects
out["injected"] = shell.run_cell("nf.param('beta', 1)", store_history=True).result
print(json.dumps(out))
"""


def test_workflow_cell_parameters_and_papermill_injected_globals(tmp_path) -> None:
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-c", SHELL_SCRIPT], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["y"] == 2.0 and out["alpha"] == 0.5
    assert out["plain"] == 1 and out["injected"] == 9
    rows = dict(query("SELECT name, value FROM run_params WHERE run_id = ?", (out["run"],)))
    assert {k: json.loads(v) for k, v in rows.items()} == {"alpha": 0.5, "tag": "run1"}
