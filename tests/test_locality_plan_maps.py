"""``nf.plan`` of a map over a Ref: its items counted from history, as ``nf.forecast`` counts them.

A map over a Ref expands only when its input's value is known.  The plan stands in for its
items with as many as the newest run had (the count ``nf.forecast`` uses:
``nbflow.store.map_items``), says where the count comes from and that it is an estimate, and
without such a run says it cannot know rather than predicting 0 s for the map.  Durations are
set in the journal (``history_edits``), so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.notebook.plan import plan_bundle
from nbflow.store.map_items import map_count

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
import nbharness as h
from history_edits import set_durations

MB = 1_000_000


@nf.task
def listing(n: int) -> list[int]:
    return list(range(n))


@nf.task
def block(i: int):
    return np.full(MB // 8, float(i))  # 1 MB, as history measures it


@nf.task
def agg(xs) -> float:
    return float(sum(x[0] for x in xs))


def mapped(n: int) -> nf.Workflow:
    with nf.Workflow("plan-map") as wf:
        agg(block.map(listing(n)))
    return wf


def ran(n: int) -> nf.Workflow:
    """The workflow run once with ``n`` items, each item recorded as taking 1 s, the list and
    the sum 0.5 s (the map node itself, a collector, takes no time)."""
    wf = mapped(n)
    wf.run(cache=False)
    set_durations({"listing-0": 0.5, "agg-0": 0.5, "block.map-0": 0.0,
                   **{f"block.map-0[{k}]": 1.0 for k in range(n)}})
    return wf


def rows(p, prefix: str) -> pd.DataFrame:
    return p.tasks[p.tasks["key"].str.startswith(prefix)]


def test_plan_counts_a_maps_items_from_its_newest_run(tmp_path):
    wf = ran(6)
    p = nf.plan(wf, workers=1)
    assert p.maps == {"block.map-0": 6}
    items = rows(p, "block.map-0[")
    assert list(items["key"]) == [f"block.map-0[{k}]" for k in range(6)]
    assert list(items["seconds"]) == [1.0] * 6 and list(items["output_bytes"]) == [MB] * 6
    assert set(items["decision"]) == {"maybe"}
    # one worker runs everything in turn: the list, six items, the sum
    assert p.makespan_s == pytest.approx(0.5 + 6 * 1.0 + 0.5)
    run_id = nf.runs().iloc[0]["id"]
    text = str(p)
    assert f"counted as 6 item(s), as many as in run {run_id}" in text and "an estimate" in text
    assert "3 tasks and 6 expected items" in text
    # the rows follow the map they belong to
    assert list(p.tasks["key"]).index("block.map-0[0]") == list(p.tasks["key"]).index("block.map-0") + 1


def test_plan_of_a_map_moves_the_items_bytes_to_their_consumer(tmp_path):
    p = nf.plan(ran(6), workers=3)
    by_key = p.tasks.set_index("key")
    # the items spread over the workers, and the task taking the map's result fetches them
    # where they were made, as on a cluster: the map node, a list made in this process,
    # runs on no worker and moves nothing (as run.locality_report() lists no row for it)
    assert p.bytes_moved == 4 * MB  # four of the six 1 MB results are on the other two workers
    assert by_key.loc["agg-0", "input_bytes_moved"] == p.bytes_moved
    assert by_key.loc["block.map-0", "input_bytes_moved"] == 0
    assert pd.isna(by_key.loc["block.map-0", "worker"])
    assert p.bytes_moved_round_robin >= p.bytes_moved


@nf.task
def twice(a):
    return a * 2


def test_plan_of_a_map_over_a_maps_result_keeps_each_item_with_its_input(tmp_path):
    with nf.Workflow("plan-map") as wf:
        agg(twice.map(block.map(listing(4))))
    wf.run(cache=False)
    set_durations(1.0)
    p = nf.plan(wf, workers=2)
    assert p.maps == {"block.map-0": 4, "twice.map-0": 4}
    where = dict(zip(p.tasks["key"], p.tasks["worker"], strict=True))
    taken = dict(zip(p.tasks["key"], p.tasks["input_bytes"], strict=True))
    moved = dict(zip(p.tasks["key"], p.tasks["input_bytes_moved"], strict=True))
    for k in range(4):  # item k of the second map takes item k of the first, where it is
        assert taken[f"twice.map-0[{k}]"] == MB
        assert where[f"twice.map-0[{k}]"] == where[f"block.map-0[{k}]"]
        assert moved[f"twice.map-0[{k}]"] == 0
    assert taken["agg-0"] == 4 * MB and taken["twice.map-0"] == 0
    assert p.bytes_moved == moved["agg-0"] == 2 * MB  # the two items made on the other worker


def test_plan_and_forecast_count_the_same_items(tmp_path):
    wf = ran(5)
    # as many workers as items, moving data for free: the plan's makespan is its critical
    # path, the longest chain by predicted seconds, which the forecast computes too
    p = nf.plan(wf, workers=8, bandwidth=1e15)
    fc = nf.forecast(wf, workers=[1])
    assert fc.maps == p.maps == {"block.map-0": 5}
    assert fc.tasks == len(p.tasks) - 1  # (the forecast counts no map node)
    assert p.makespan_s == pytest.approx(0.5 + 1.0 + 0.5)  # list, an item, the sum
    assert fc.critical_path_s == pytest.approx(p.makespan_s)
    assert fc.critical_path[1].startswith("block.map-0[")


def test_plan_of_a_map_over_a_lists_results_keeps_each_item_with_its_input(tmp_path):
    with nf.Workflow("plan-map") as wf:
        agg(twice.map(block.map([0, 1, 2, 3])))  # a map over the collected results of a list
    wf.run(cache=False)
    set_durations(1.0)
    p = nf.plan(wf, workers=2)
    assert p.maps == {"twice.map-0": 4}
    where = dict(zip(p.tasks["key"], p.tasks["worker"], strict=True))
    taken = dict(zip(p.tasks["key"], p.tasks["input_bytes"], strict=True))
    for k in range(4):
        assert taken[f"twice.map-0[{k}]"] == MB
        assert where[f"twice.map-0[{k}]"] == where[f"block-{k}"]


def test_plan_takes_the_newest_runs_count(tmp_path):
    ran(3)
    wf = ran(5)
    assert nf.plan(wf).maps == {"block.map-0": 5}
    assert map_count("plan-map", "block.map-0").items == 5
    assert map_count("plan-map", "nothing.map-0").items is None


def test_plan_of_a_map_without_history_says_it_cannot_know(tmp_path):
    p = nf.plan(mapped(4), workers=2)
    assert p.maps == {"block.map-0": None}
    assert rows(p, "block.map-0[").empty
    seconds = p.tasks.set_index("key").loc["block.map-0", "seconds"]
    assert pd.isna(seconds)  # unknown, not 0 s
    text = str(p)
    assert "no recent run of this workflow expanded it: its items are left out" in text
    assert "run the workflow once" in text


def test_a_long_maps_items_are_folded_when_shown_not_in_the_table(tmp_path):
    wf = ran(12)
    p = nf.plan(wf)
    assert len(rows(p, "block.map-0[")) == 12  # the data: every expected item
    for shown in (str(p), p._repr_html_(), plan_bundle(wf, check=False)["text/plain"]):
        assert "block.map-0[4]" in shown and "block.map-0[5]" not in shown
        assert "... 7 more expected items of block.map-0" in shown


def test_plan_says_that_cache_hits_are_planned_as_if_they_ran(tmp_path):
    wf = mapped(3)
    assert "served by the cache" not in str(nf.plan(wf))
    wf.run()  # stored: the list would now be a hit
    p = nf.plan(wf)
    assert set(p.tasks.loc[p.tasks["key"] == "listing-0", "decision"]) == {"hit"}
    assert ("1 task(s) would be served by the cache (decision 'hit'): they are planned as if "
            "they ran") in str(p)
    assert "placed below as if they ran" in plan_bundle(wf, check=False)["text/plain"]


def test_plan_bundle_lists_the_expected_items(tmp_path):
    wf = ran(3)
    text = plan_bundle(wf, check=False, workers=2)["text/plain"]
    assert "counted as 3 item(s)" in text
    for k in range(3):
        assert f"block.map-0[{k}]" in text
    assert "expected item" in plan_bundle(wf, check=False)["text/html"]


CELLS = [
    "import nbflow as nf\nimport numpy as np",
    "@nf.task\ndef listing(n):\n    return list(range(n))\n\n"
    "@nf.task\ndef block(i):\n    return np.full(125_000, float(i))\n\n"
    "@nf.task\ndef agg(xs):\n    return float(sum(x[0] for x in xs))",
    "%%workflow mapped --plan\ntotal = agg(block.map(listing(3)))",
    "%%workflow mapped --no-cache\ntotal = agg(block.map(listing(3)))",
    "%%workflow mapped --plan --workers 2\ntotal = agg(block.map(listing(3)))",
]


@pytest.mark.timeout(240)
def test_workflow_plan_magic_shows_a_maps_items_in_a_kernel(tmp_path):
    nb = h.notebook(CELLS)
    h.execute(nb, tmp_path)
    h.assert_no_errors(nb)
    before, after = h.text(nb.cells[2]), h.text(nb.cells[4])
    assert "no recent run of this workflow expanded it" in before and "block.map-0[0]" not in before
    assert "counted as 3 item(s)" in after
    assert all(f"block.map-0[{k}]" in after for k in range(3))
    assert "expected item" in h.html(nb.cells[4])


def test_plan_refuses_what_is_not_a_workflow_by_name(tmp_path):
    from nbflow.locality.plan import PlanError

    wf = mapped(2)
    ref = wf.nodes[-1]
    with pytest.raises(PlanError, match="got the Ref 'agg-0': pass the workflow it was traced in"):
        nf.plan(ref)
    for wrong in ("plan-map", None, 42):
        with pytest.raises(PlanError, match=f"nf.plan takes a workflow .*got {type(wrong).__name__}"):
            nf.plan(wrong)
    with pytest.raises(PlanError, match=r"bandwidth must be a positive number .* got 'fast'"):
        nf.plan(wf, bandwidth="fast")


def test_plan_summary_says_more_or_as_many_bytes_than_round_robin_plainly():
    import dataclasses

    from nbflow.locality.plan import WorkflowPlan

    p = WorkflowPlan("w", 2, 1e8, 3 * MB, 2 * MB, 1.0, 1.0, 0, pd.DataFrame())
    assert "3.0 MB would move between workers (50% more), against 2.0 MB" in p.summary()
    same = dataclasses.replace(p, bytes_moved=2 * MB)
    assert "(as many), against" in same.summary() and "fewer" not in same.summary()
    assert "(50% fewer)" in dataclasses.replace(p, bytes_moved=MB).summary()
