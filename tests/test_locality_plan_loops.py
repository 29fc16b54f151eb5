"""``nf.plan`` and ``nf.loop``: a loop's iterations are not planned, and the plan says so.

How many iterations a loop runs depends on the values it makes, so a plan made before the
run cannot count them; it used to leave them out silently (its bytes and makespan read as
if the loop ran nothing).  Now the notes name the loop and say that its iterations are not
planned, and its row claims neither a worker nor seconds.
"""

from __future__ import annotations

import pandas as pd

import nbflow as nf


@nf.task
def start(n: int) -> list[int]:
    return list(range(n))


@nf.task
def grow(xs: list[int]) -> list[int]:
    return [*xs, len(xs)]


@nf.task
def count(xs: list[int]) -> int:
    return len(xs)


def test_a_loops_iterations_are_said_not_to_be_planned():
    with nf.Workflow("plan-loop") as wf:
        looped = nf.loop(grow, start(2), until=lambda xs: len(xs) >= 5, max_iter=10)
        count(looped)
    p = nf.plan(wf)
    text = str(p)
    assert f"{looped.key} is an nf.loop" in text and "are not planned" in text
    assert "max_iter=10" in text
    row = p.tasks.set_index("key").loc[looped.key]
    assert row["worker"] is None or pd.isna(row["worker"])  # (its iterations run; it does not)
    assert pd.isna(row["seconds"])  # unknown, not 0
    # the run itself does run iterations the plan left out (what the note warns of)
    run = wf.run()
    assert run[looped] == [0, 1, 2, 3, 4]
    assert any(k.startswith(f"{looped.key}[") for k in run.tasks["key"])
