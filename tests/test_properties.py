"""Property tests over random DAGs: any worker count gives the sequential answer, failures
skip exactly the descendants, and admitted resource demand never exceeds capacity."""

from __future__ import annotations

import threading
import time

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbflow as nf


@st.composite
def dags(draw, max_nodes: int = 25):
    n = draw(st.integers(1, max_nodes))
    parents = []
    for i in range(n):
        ps = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        parents.append(sorted(ps))
    return parents


@nf.task
def node(i, *inputs):
    return (i * 7 + sum(inputs)) % 1009


@nf.task
def fragile(i, *inputs):
    raise ValueError(f"node {i} fails")


def sequential(parents):
    values = []
    for i, ps in enumerate(parents):
        values.append((i * 7 + sum(values[p] for p in ps)) % 1009)
    return values


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(dags(), st.integers(1, 6))
def test_any_worker_count_gives_the_sequential_result(parents, workers):
    with nf.Workflow("prop") as wf:
        refs = []
        for i, ps in enumerate(parents):
            refs.append(node(i, *[refs[p] for p in ps]))
    run = wf.run(workers=workers)
    assert [run[r] for r in refs] == sequential(parents)


@SETTINGS
@given(dags(), st.data())
def test_a_failure_skips_exactly_its_descendants(parents, data):
    bad = data.draw(st.integers(0, len(parents) - 1))
    with nf.Workflow("prop-fail") as wf:
        refs = []
        for i, ps in enumerate(parents):
            task = fragile if i == bad else node
            refs.append(task(i, *[refs[p] for p in ps]))
    run = wf.run(raise_on_error=False)
    g = nx.DiGraph()
    g.add_nodes_from(range(len(parents)))
    g.add_edges_from((p, i) for i, ps in enumerate(parents) for p in ps)
    below = nx.descendants(g, bad)
    states = run.tasks.set_index("key")["state"]
    for i, r in enumerate(refs):
        expected = "failed" if i == bad else "skipped" if i in below else "completed"
        assert states[r.key] == expected


@SETTINGS
@given(dags(max_nodes=15), st.lists(st.integers(1, 4), min_size=15, max_size=15), st.integers(4, 6))
def test_admitted_demand_never_exceeds_capacity(parents, demands, capacity):
    live = 0
    peak = 0
    lock = threading.Lock()
    tasks = {}

    def task_for(units):
        if units not in tasks:
            @nf.task(name=f"units{units}", resources={"slots": units})
            def use(i, *inputs):
                nonlocal live, peak
                with lock:
                    live += units
                    peak = max(peak, live)
                time.sleep(0.002)  # hold the units long enough for others to try to start
                with lock:
                    live -= units
                return i

            tasks[units] = use
        return tasks[units]

    with nf.Workflow("prop-res") as wf:
        refs = []
        for i, ps in enumerate(parents):
            refs.append(task_for(demands[i])(i, *[refs[p] for p in ps]))
    run = wf.run(resources={"slots": capacity})
    assert run.status == "completed"
    assert peak <= capacity
