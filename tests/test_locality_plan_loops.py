"""``nf.plan`` and ``nf.loop``: a loop's iterations are planned as many as its newest run had.

How many iterations a loop runs depends on the values it makes, so before a run the best
evidence is the workflow's newest run of it: the plan counts its iterations from there
(``<loop key>[k]``), chains them (each takes the previous one's result where it was made)
and says so; a loop that no run has run is not planned, and the plan says that by name
instead of leaving the iterations out silently (it once did: bytes and makespan read as if
the loop ran nothing).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import nbflow as nf

KB = 1024


@nf.task
def start(n: int) -> np.ndarray:
    return np.zeros(n)


@nf.task
def grow(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a, np.zeros(KB)])  # (8 KiB more each iteration)


@nf.task
def count(a: np.ndarray) -> int:
    return len(a)


def looping() -> tuple[nf.Workflow, nf.Ref, nf.Ref]:
    with nf.Workflow("plan-loop") as wf:
        looped = nf.loop(grow, start(KB), until=lambda a: len(a) >= 4 * KB, max_iter=10)
        n = count(looped)
    return wf, looped, n


def test_a_loop_no_run_has_run_is_said_not_to_be_planned():
    wf, looped, _ = looping()
    p = nf.plan(wf)
    text = str(p)
    assert f"{looped.key} is an nf.loop that no recent run" in text and "are not planned" in text
    assert "max_iter=10" in text and p.loops == {looped.key: None}
    row = p.tasks.set_index("key").loc[looped.key]
    assert row["worker"] is None or pd.isna(row["worker"])  # (its iterations run; it does not)
    assert pd.isna(row["seconds"])  # unknown, not 0
    assert not p.tasks["key"].str.startswith(f"{looped.key}[").any()


def test_a_loop_is_planned_with_its_newest_runs_iterations():
    wf, looped, n = looping()
    run = wf.run()
    assert run[n] == 4 * KB
    ran = sorted(k for k in run.tasks["key"] if k.startswith(f"{looped.key}["))
    assert len(ran) == 3  # (1 Ki -> 2, 3, 4 Ki elements)

    wf, looped, n = looping()
    p = nf.plan(wf)
    assert p.loops == {looped.key: 3}
    assert f"{looped.key} is an nf.loop: planned with 3 iteration(s), as many as in run {run.id}" in str(p)
    assert "3 expected iterations of loops" in str(p)
    t = p.tasks.set_index("key")
    iterations = [f"{looped.key}[{k}]" for k in range(3)]
    assert list(t.loc[iterations, "task"]) == ["grow"] * 3
    assert t.loc[iterations, "worker"].notna().all()  # each placed on a worker
    # each takes the previous one's result (its predicted size, from that run's history),
    # and what takes the loop's value takes the last iteration's
    sizes = [int(t.loc[k, "output_bytes"]) for k in iterations]
    assert sizes == [2 * KB * 8, 3 * KB * 8, 4 * KB * 8]
    assert int(t.loc[iterations[1], "input_bytes"]) == sizes[0]
    assert int(t.loc[iterations[2], "input_bytes"]) == sizes[1]
    assert int(t.loc[n.key, "input_bytes"]) == sizes[2]
    assert int(t.loc[iterations[0], "input_bytes"]) == KB * 8  # the loop's input
    assert set(t.loc[iterations, "decision"]) == {"maybe"}

    # and a %%workflow --plan cell shows them as such
    from nbflow.notebook.plan import plan_bundle

    shown = plan_bundle(wf, check=False)["text/plain"]
    assert shown.count("an expected iteration of an nf.loop") == 3
    assert "an expected item of a map" not in shown
