"""Runs that take the less common moves of the state table, with every move checked.

The test suite runs with ``NBFLOW_CHECK_TRANSITIONS=1`` (``conftest.py``), so a move the
scheduler makes that the table does not allow would raise inside the run.  Each test here
drives a run through one such move and checks the event stream shows it.
"""

from __future__ import annotations

import itertools

import anyio
import pytest

import nbflow as nf
from nbflow.core import events as ev
from nbflow.core.states import TRANSITIONS
from nbflow.engine import taskstate


@pytest.fixture(autouse=True)
def _checking_is_on():
    assert taskstate.CHECK, "the test suite runs with transitions checked (tests/conftest.py)"


def moves(run: nf.Run, key: str) -> list[str]:
    """The states task ``key`` went through, from its events."""
    out = ["pending"]
    for e in run.events:
        if isinstance(e, ev.TaskEvent) and e.key == key and type(e).state is not None:
            out.append(type(e).state)
    return out


def assert_table_allows(path: list[str]) -> None:
    for old, new in itertools.pairwise(path):
        assert new in TRANSITIONS[old], f"{old} -> {new}"


seen_failures: list[str] = []


@nf.task(retries=3, retry_delay=60, compensate=lambda out: None)
async def flaky(x):
    seen_failures.append("flaky")
    raise OSError("try again later")


@nf.task
async def ship_after_flaky_failed(x):
    while not seen_failures:  # wait until flaky's first attempt has failed (it then retries)
        await anyio.sleep(0.01)
    raise RuntimeError("carrier down")


def test_a_saga_member_waiting_to_retry_is_skipped_when_the_saga_rolls_back():
    seen_failures.clear()
    with nf.Workflow("saga-retrying") as wf, nf.saga("order"):
        f = flaky(1)
        s = ship_after_flaky_failed(2)
    run = wf.run(cache=False, raise_on_error=False)
    assert run.status == "failed"
    path = moves(run, f.key)
    assert path == ["pending", "ready", "running", "retrying", "skipped"]
    assert_table_allows(path)
    reason = run.tasks.set_index("key").loc[f.key, "error"]
    assert reason.startswith("saga order") and reason.endswith(f"rolled back after {s.key!r} failed")
    assert seen_failures == ["flaky"]  # the retry never ran


class NoTruth:
    def __bool__(self):
        raise ValueError("the truth value is ambiguous")


@nf.task
def condition():
    return NoTruth()


@nf.task
def side(x):
    return x


def test_a_branch_gate_without_a_truth_value_fails_straight_from_pending():
    with nf.Workflow("gate-fails") as wf:
        out = nf.branch(condition(), then=lambda: side(1), otherwise=lambda: side(2))
    run = wf.run(cache=False, raise_on_error=False)
    gates = [e.key for e in run.events if isinstance(e, ev.TaskFailed)]
    assert gates and all(k.startswith("branch") or k.startswith("gate") for k in gates), gates
    path = moves(run, gates[0])
    assert path == ["pending", "failed"]
    assert_table_allows(path)
    assert run.tasks.set_index("key").loc[out.key, "state"] == "skipped"


@nf.task
def numbers():
    return 5  # not a list


@nf.task
def double(x):
    return 2 * x


def test_a_map_over_a_non_list_fails_from_ready():
    with nf.Workflow("map-non-list") as wf:
        m = double.map(numbers())
    run = wf.run(cache=False, raise_on_error=False)
    path = moves(run, m.key)
    assert path == ["pending", "ready", "failed"]
    assert_table_allows(path)


@nf.task
def step(x):
    return x + 1


def test_a_loop_starts_running_straight_from_pending():
    with nf.Workflow("loop-start") as wf:
        lp = nf.loop(step, 0, until=lambda v: v >= 2, max_iter=5)
    run = wf.run(cache=False)
    assert run[lp] == 2
    path = moves(run, lp.key)
    assert path == ["pending", "running", "completed"]
    assert_table_allows(path)
