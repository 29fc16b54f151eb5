"""Maps that tolerate failed items, also when the items come from a Ref (known at run time):
``task.map(ref, on_error="skip")`` and ``nf.gather(task.map(ref), min_success=k)``."""

from __future__ import annotations

import pytest

import nbflow as nf


@nf.task
def numbers(n: int) -> list[int]:
    return list(range(n))


@nf.task
def fragile(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(f"item {x} is bad")
    return 10 * x


@nf.task
def total(xs: list[int]) -> int:
    return sum(xs)


def _good(n: int) -> list[int]:
    return [10 * x for x in range(n) if x % 3]


def test_skip_over_a_ref_gives_the_good_items_in_order() -> None:
    with nf.Workflow("skip-ref") as wf:
        vals = fragile.map(numbers(8), on_error="skip")
        s = total(vals)
    run = wf.run(cache=False)
    assert run.status == "completed"
    assert run[vals] == _good(8)
    assert run[s] == sum(_good(8))
    assert sorted(run.errors()) == ["fragile.map-0[0]", "fragile.map-0[3]", "fragile.map-0[6]"]
    assert str(run.errors()["fragile.map-0[3]"]) == "item 3 is bad"
    states = dict(zip(run.tasks.key, run.tasks.state, strict=True))
    assert states["fragile.map-0"] == "completed" and states[s.key] == "completed"


def test_skip_over_a_ref_with_every_item_failing_gives_an_empty_list() -> None:
    with nf.Workflow("all-bad") as wf:
        vals = fragile.map(numbers(1), on_error="skip")
    run = wf.run(cache=False)
    assert run[vals] == [] and list(run.errors()) == ["fragile.map-0[0]"]


def test_skip_over_an_empty_ref() -> None:
    with nf.Workflow("empty") as wf:
        vals = fragile.map(numbers(0), on_error="skip")
    assert wf.run(cache=False)[vals] == []


def test_gather_over_a_ref_map_honours_min_success() -> None:
    with nf.Workflow("enough") as wf:
        vals = nf.gather(fragile.map(numbers(9)), min_success=6)
        s = total(vals)
    run = wf.run(cache=False)
    assert run.status == "completed"
    assert run[vals] == _good(9) and run[s] == sum(_good(9))

    with nf.Workflow("too-few") as wf:
        vals = nf.gather(fragile.map(numbers(9)), min_success=7)
        s = total(vals)
    run = wf.run(cache=False, raise_on_error=False)
    assert run.status == "failed"
    err = run.errors()[vals.key]
    assert isinstance(err, nf.GatherError) and "needed 7 of 9" in str(err) and ", 6 did" in str(err)
    assert dict(zip(run.tasks.key, run.tasks.state, strict=True))[s.key] == "skipped"


def test_gather_over_a_ref_map_defaults_to_all_items() -> None:
    with nf.Workflow("all") as wf:
        vals = nf.gather(fragile.map(numbers(4)))
    run = wf.run(cache=False, raise_on_error=False)
    assert run.status == "failed" and isinstance(run.errors()[vals.key], nf.GatherError)


def test_min_success_above_the_items_at_run_time_fails_the_gather() -> None:
    with nf.Workflow("more-than-items") as wf:
        vals = nf.gather(fragile.map(numbers(2)), min_success=5)
    run = wf.run(cache=False, raise_on_error=False)
    assert "needed 5 of 2" in str(run.errors()[vals.key])


def test_gather_of_a_ref_map_already_used_is_refused_with_the_fix() -> None:
    with nf.Workflow("used"):
        m = fragile.map(numbers(3))
        total(m)
        with pytest.raises(nf.WorkflowDefinitionError, match=r"Wrap the map where it is made"):
            nf.gather(m, min_success=1)
        with pytest.raises(nf.WorkflowDefinitionError, match=r"min_success"):
            nf.gather(fragile.map(numbers(3)), min_success=-1)


def test_a_tolerant_ref_map_in_chunks_keeps_failures_per_item() -> None:
    with nf.Workflow("chunks") as wf:
        vals = fragile.map(numbers(200), on_error="skip", batch=25)
    run = wf.run(cache=False)
    assert run[vals] == _good(200)
    assert sorted(run.errors()) == sorted(f"fragile.map-0[{x}]" for x in range(200) if x % 3 == 0)


def test_a_tolerant_ref_map_is_cached_per_item() -> None:
    with nf.Workflow("cached") as wf:
        vals = fragile.map(numbers(30), on_error="skip")
    first = wf.run()
    second = wf.run()
    assert second[vals] == first[vals] == _good(30)
    items = second.tasks[second.tasks.key.str.startswith("fragile.map-0[")]
    good = items[items.state == "completed"]
    assert len(good) == 20 and good.cached.all()
    assert sorted(second.errors()) == sorted(f"fragile.map-0[{x}]" for x in range(30) if x % 3 == 0)
