"""The tests' history editor (tests/history_edits.py) writes the timelines it promises."""

from __future__ import annotations

import pytest
from history_edits import _list_schedule, replay, set_durations

import nbflow as nf


def test_list_schedule_on_two_workers() -> None:
    # 0 -> 2, 1 -> 3, and 4 waits for both 2 and 3; 0 and 1 run together
    took = {0: 1.0, 1: 3.0, 2: 1.0, 3: 1.0, 4: 0.0}
    deps = {0: [], 1: [], 2: [0], 3: [1], 4: [2, 3]}
    begin, end = _list_schedule(took, deps, 2, 10.0)
    assert begin == {0: 10.0, 1: 10.0, 2: 11.0, 3: 13.0, 4: 14.0}
    assert end == {0: 11.0, 1: 13.0, 2: 12.0, 3: 14.0, 4: 14.0}
    one, _ = _list_schedule(took, deps, 1, 0.0)
    assert one == {0: 0.0, 1: 1.0, 2: 4.0, 3: 5.0, 4: 6.0}  # one worker: node order


@nf.task
def step(x: int) -> int:
    return x


def test_replay_and_set_durations_rewrite_the_store() -> None:
    with nf.Workflow("edited") as wf:
        a = step(1)
        step(a)
    run = wf.run(cache=False)
    replay(run.id, {"step": 2.5}, workers=1)
    t = nf.load_run(run.id).tasks.set_index("key")
    assert list(t["duration_s"]) == [2.5, 2.5]
    starts = [s.timestamp() for s in t["start"]]
    assert starts[1] - starts[0] == pytest.approx(2.5)  # the second waited for the first
    set_durations({"step-1": 0.5})
    assert list(nf.load_run(run.id).tasks.set_index("key")["duration_s"]) == [2.5, 0.5]
    set_durations(0.25)
    assert list(nf.load_run(run.id).tasks["duration_s"]) == [0.25, 0.25]
