"""A snapshot's fixed parts of the graph (keys, kinds, dependencies) follow a node that is
replaced in place, not only the graph's growth.

A ``map`` over a Ref expands in two steps on the run's thread
(:func:`nbflow.engine.resolvers.expand_map`): its items are appended, then the map's own
node is replaced by a ``collect`` of them.  A snapshot taken between the two (from the
widget's or the cell's thread) sees the items next to the map as it was; the next ones
must see the collect, although the node count and the last node did not change, or the
task after the map is simulated as if it did not wait for the items (a stale, too short
ETA).  Driven here by a stand-in run whose node list the test changes step by step,
then on the engine, with a snapshot hooked between the two steps of a real expansion.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nbflow.predict.inflight import eta_of, snapshot

TASK_S = 10.0  # every task's predicted duration


@dataclass(eq=False)  # (compared by identity, as the engine's Refs are)
class Node:
    key: str
    kind: str = "task"
    deps: list[int] = field(default_factory=list)
    name: str = "step"
    task: Any = None


class GrowingRun:
    """A run whose graph is ``items -> m (map) -> after``, grown as the engine grows it."""

    def __init__(self) -> None:
        self.nodes = [Node("items"), Node("m", "map", [0]), Node("after", deps=[1])]
        self.state = ["completed", "running", "pending"]
        self.workers = 4
        self.started_at = time.time()

    def add_items(self, k: int) -> None:
        """The map's items are appended (its own node is still the map's)."""
        self.nodes += [Node(f"m[{j}]") for j in range(k)]
        self.state += ["pending"] * k

    def collect(self) -> None:
        """The map's node is replaced by a collect of its items (same count, same last node)."""
        items = list(range(3, len(self.nodes)))
        self.nodes[1] = Node("m", "collect", items)

    def state_now(self) -> dict[str, Any]:
        n = len(self.nodes)
        return {"nodes": list(self.nodes), "state": list(self.state), "start": [math.nan] * n,
                "duration": [1.0 if s == "completed" else math.nan for s in self.state],
                "input_bytes": [math.nan] * n, "level": None}


class Fixed:
    """A stand-in predictor: every task takes TASK_S seconds, every draw."""

    def predict(self, rows: pd.DataFrame, finished: Any = None) -> pd.DataFrame:
        return pd.DataFrame({"duration_s": [TASK_S] * len(rows), "source": ["history"] * len(rows)})

    def sample(self, rows: pd.DataFrame, n: int, finished: Any = None, seed: int = 0) -> np.ndarray:
        return np.full((n, len(rows)), TASK_S)


def test_a_node_replaced_in_place_is_read_again() -> None:
    run = GrowingRun()
    run.add_items(2)
    during = snapshot(run)  # between the two steps of the expansion
    assert during.kinds[1] == "map" and during.deps[1] == [0]
    run.collect()
    after = snapshot(run)
    assert after.kinds[1] == "collect" and after.deps[1] == [3, 4]
    assert after.deps[2] == [1] and after.keys == [n.key for n in run.nodes]


def test_the_eta_after_a_map_became_its_collect_waits_for_the_items() -> None:
    run = GrowingRun()
    run.add_items(2)
    during = eta_of(snapshot(run), Fixed(), samples=3, pace=False)
    # (seen mid-expansion, ``after`` waits for nothing left: it runs beside the items)
    assert during.remaining_s == TASK_S
    run.collect()
    assert eta_of(snapshot(run), Fixed(), samples=3, pace=False).remaining_s == 2 * TASK_S


def test_an_unchanged_graph_is_not_read_again() -> None:
    run = GrowingRun()
    run.add_items(2)
    run.collect()
    a, b = snapshot(run), snapshot(run)
    assert b.keys is a.keys and b.kinds is a.kinds and b.deps is a.deps  # the cache still serves
    run.state[3] = "completed"  # a state changes, the graph does not
    assert snapshot(run).deps is a.deps


def test_a_map_over_nothing_becomes_a_collect_with_no_growth() -> None:
    # (no item appended: the count and the last node are the same before and after)
    run = GrowingRun()
    assert snapshot(run).kinds[1] == "map"
    run.collect()
    snap = snapshot(run)
    assert snap.kinds[1] == "collect" and snap.deps[1] == []


def test_a_real_maps_collect_is_seen_after_a_snapshot_taken_mid_expansion(monkeypatch: Any) -> None:
    """The same on the engine: a snapshot taken while ``expand_map`` has appended the items
    but not yet replaced the map's node (hooked at the one call between the two steps,
    on the run's own thread: no race), then one after the run."""
    import nbflow as nf
    from nbflow.engine import batching
    from nbflow.notebook.magics import launch

    @nf.task
    def numbers(n: int) -> list[int]:
        return list(range(n))

    @nf.task
    def double(x: int) -> int:
        return 2 * x

    @nf.task
    def add(xs: list[int]) -> int:
        return sum(xs)

    with nf.Workflow("inflight-mid-expansion") as wf:
        add(double.map(numbers(3)))
    made: dict[str, Any] = {}
    seen: list[Any] = []
    real_plan = batching.plan

    def plan_with_a_snapshot(*args: Any, **kwargs: Any) -> Any:
        seen.append(snapshot(made["run"]))
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(batching, "plan", plan_with_a_snapshot)
    run = launch(wf, {"cache": False}, [], made=made)
    run.wait()
    [during] = seen
    m = during.kinds.index("map")
    assert len(during.keys) == len(run.nodes)  # the items were there already
    after = snapshot(run)
    items = [i for i, key in enumerate(after.keys) if key.startswith(f"{after.keys[m]}[")]
    assert len(items) == 3 and after.kinds[m] == "collect" and after.deps[m] == items
    assert run.status == "completed"
