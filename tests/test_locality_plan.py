"""``nf.plan(wf)`` and ``%%workflow --plan``: predicted placement and bytes before a run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import nbflow as nf
from nbflow.locality.plan import PlanError, WorkflowPlan
from nbflow.notebook.plan import plan_bundle

sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
import nbharness as h

MB = 1_000_000


@nf.task
def make(n: int, fill: float = 0.0):
    return np.full(n // 8, fill)


@nf.task
def inc(a):
    return a + 1


@nf.task
def total(*arrays):
    return float(sum(float(a[:10].sum()) for a in arrays))


def chains(name: str) -> nf.Workflow:
    with nf.Workflow(name) as wf:
        ends = []
        for c in range(3):
            r = make(2 * MB, float(c))
            for _ in range(3):
                r = inc(r)
            ends.append(r)
        total(*ends)
    return wf


def test_plan_without_history_says_what_it_does_not_know(tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path))
    p = nf.plan(chains("plan-fresh"))
    assert isinstance(p, WorkflowPlan) and p.workers == 4
    assert p.unknown_sizes == 12 and p.bytes_moved == 0  # (total-0 feeds nothing)
    assert "no recorded output size" in str(p) and "every task is taken to last 1 s" in str(p)
    assert set(p.tasks["decision"]) <= {"miss", "maybe"}  # the store's cache forecast too


class Opaque:
    """A result of no kind whose size nbflow measures without Dask (not an array, a frame,
    bytes, text, a number or a list/dict of them)."""

    def __init__(self, n: int) -> None:
        self.items = list(range(n))

    def __len__(self) -> int:
        return len(self.items)


@nf.task
def listed(n):
    return Opaque(n)


@nf.task
def count(xs):
    return len(xs)


def test_plan_with_history_but_no_sizes_does_not_say_there_is_no_history(tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path))
    with nf.Workflow("plan-lists") as wf:
        count(listed(3))
    wf.run(cache=False)  # durations recorded; an Opaque's size is not known without Dask
    p = nf.plan(wf)
    assert p.unknown_sizes == 1
    assert "no history" not in str(p) and "arrays, DataFrames" in str(p)


def test_plan_with_history_places_chains_and_beats_round_robin(tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path))
    wf = chains("plan-chains")
    wf.run(cache=False)  # history: every output is 2 MB
    p = nf.plan(wf, workers=3)
    assert p.unknown_sizes == 0
    where = dict(zip(p.tasks["key"], p.tasks["worker"], strict=True))
    for c in range(3):  # each chain on one worker: its links move nothing
        chain = [f"make-{c}"] + [f"inc-{3 * c + k}" for k in range(3)]
        assert len({where[k] for k in chain}) == 1
    # only the fan-in moves: two of the three 2 MB chain ends.  Round-robin can do as well
    # here when the recorded durations make the three chains advance in step (each level
    # then deals one task to each worker, keeping every chain in place), so it is never
    # better, and it is worse on a lone chain below, where it must move every link.
    assert p.bytes_moved == 4 * MB
    assert p.bytes_moved_round_robin >= p.bytes_moved
    assert "<table" in p._repr_html_()


def test_plan_beats_round_robin_on_a_lone_chain(tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path))
    with nf.Workflow("plan-lone") as wf:
        r = make(2 * MB)
        for _ in range(3):
            r = inc(r)
    wf.run(cache=False)
    p = nf.plan(wf, workers=3)
    # round-robin sends each link to the next worker; the rule keeps the chain on one
    assert p.bytes_moved == 0 and p.bytes_moved_round_robin == 3 * 2 * MB
    assert p.saving == 1.0
    assert "fewer), against" in p.summary()


def test_plan_refuses_bad_arguments():
    wf = chains("plan-bad")
    with pytest.raises(PlanError, match="workers must be a whole number"):
        nf.plan(wf, workers=0)
    with pytest.raises(PlanError, match="bandwidth must be a positive"):
        nf.plan(wf, bandwidth=-1)
    with pytest.raises(PlanError, match="unknown backend 'nonsense': use 'local'"):
        nf.plan(wf, backend="nonsense")
    with nf.Workflow("empty") as empty:
        pass
    with pytest.raises(PlanError, match="no tasks"):
        nf.plan(empty)
    assert issubclass(PlanError, nf.NbflowError)


def test_plan_bundle_shows_the_placement(tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path))
    wf = chains("plan-bundle")
    wf.run(cache=False)
    bundle = plan_bundle(wf, check=False, workers=3)
    assert "would move between workers" in bundle["text/plain"]
    assert "worker" in bundle["text/plain"] and "w000" in bundle["text/plain"]
    assert "input_bytes_moved" in bundle["text/html"]


CELLS = [
    "import nbflow as nf\nimport numpy as np",
    "@nf.task\ndef make(n):\n    return np.zeros(n // 8)\n\n@nf.task\ndef inc(a):\n    return a + 1",
    "%%workflow planned --no-cache\nx = inc(inc(make(1_000_000)))",
    "%%workflow planned --plan --workers 2\ny = inc(inc(make(1_000_000)))",
    "assert 'y' not in dir(), 'the plan ran something'\nprint('plan ran nothing')",
]


@pytest.mark.timeout(240)
def test_workflow_plan_magic_shows_placement_in_a_kernel(tmp_path):
    nb = new_notebook(cells=[new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    h.execute(nb, tmp_path)
    h.assert_no_errors(nb)
    shown = nb.cells[3]
    assert "Placement on 2 workers" in h.text(shown) and "would move between workers" in h.text(shown)
    assert "nbflow-plan" in h.html(shown)
    assert "plan ran nothing" in h.text(nb.cells[4])
