"""``run.locality_report()``'s suggestions, from a run's recorded facts (a stand-in agent:
the report reads only what the agent recorded, so no cluster and no timing is involved).

A suggestion about where a task ran must save what it says: a reduce over results made on
every worker fetches about as much wherever it runs, so it gets none; a consumer with other
inputs would still fetch those; the pairs of two maps' items are one suggestion, not one
per item; and what to change follows from what the run recorded (no hint for a first run's
task, Dask moving a hinted task, another placement mode).  Results that came to the
notebook because the run's own client closed are named as such (one test runs a cluster).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from nbflow.locality.report import build

sys.path.insert(0, str(Path(__file__).resolve().parent))

MB = 1_000_000


class RecordedRun:
    """What a Dask run's locality agent holds once it ended: where each task ran, its
    result's size, its inputs, and the transfers the workers logged."""

    def __init__(self, mode: str = "locality") -> None:
        self.mode = mode
        self.order: list[str] = []
        self.inputs_of: dict[str, list[tuple[str, str | None, int | None]]] = {}
        self.worker_of: dict[str, str | None] = {}
        self.nbytes_of: dict[str, int | None] = {}
        self.seconds_of: dict[str, float] = {}
        self.node_of: dict[str, str] = {}
        self.hinted: dict[str, str] = {}  # task key -> the worker placement sent it to
        self.memory = None
        self.backend = SimpleNamespace(client_bytes=0, scattered_bytes=0, fetched=[])
        self.rows: list[dict] = []

    def task(self, key: str, worker: str, nbytes: int, *inputs: str, hinted: str | None = None) -> None:
        self.order.append(key)
        if hinted:
            self.hinted[key] = hinted
        self.worker_of[key], self.nbytes_of[key] = worker, nbytes
        self.inputs_of[key] = [(p, self.worker_of[p], self.nbytes_of[p]) for p in inputs]
        for p in inputs:
            if self.worker_of[p] != worker:  # fetched, as the worker's transfer log says
                self.rows.append({"producer": p, "consumer": key, "from_worker": self.worker_of[p],
                                  "to_worker": worker, "bytes": self.nbytes_of[p], "seconds": 0.01})

    def transfers(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["producer", "consumer", "from_worker", "to_worker",
                                                "bytes", "seconds"])

    def input_bytes_moved(self) -> dict[str, int]:
        moved = dict.fromkeys(self.order, 0)
        for r in self.rows:
            moved[r["consumer"]] += r["bytes"]
        return moved


def test_a_reduce_over_every_workers_results_gets_no_keep_together_suggestion():
    run = RecordedRun()
    for k in range(4):  # two items on each worker
        run.task(f"part.map-0[{k}]", "A" if k < 2 else "B", 2 * MB)
    run.task("total-0", "A", 8, *(f"part.map-0[{k}]" for k in range(4)))
    rep = build(run, "dask")
    assert rep.bytes_moved == 4 * MB  # it fetched B's two results...
    # ...and on B it would have fetched A's two: keeping any pair together saves nothing
    assert not [s for s in rep.suggestions if "keep" in s.what]


def test_a_place_that_saves_a_sliver_is_not_suggested():
    run = RecordedRun()
    for k in range(6):  # six parts on A, six slightly smaller ones on B: nearly even
        run.task(f"part-{k}", "A", MB)
    for k in range(6, 12):
        run.task(f"part-{k}", "B", MB - 1000)
    run.task("total-0", "B", 8, *(f"part-{k}" for k in range(12)))
    rep = build(run, "dask")
    assert rep.bytes_moved == 6 * MB  # on A it would have fetched 6 kB less: not worth a line
    assert not rep.suggestions


def test_the_pairs_of_two_maps_items_are_one_suggestion_with_their_total_saving():
    run = RecordedRun()
    for k in range(4):
        run.task(f"load.map-0[{k}]", "A", 2 * MB)
    for k in range(4):
        run.task(f"clean.map-0[{k}]", "B" if k < 3 else "A", 2 * MB, f"load.map-0[{k}]")
    [tip] = build(run, "dask").suggestions
    assert tip.what.startswith("keep each load.map-0[*] -> clean.map-0[*] pair on one worker")
    assert "without a placement hint" in tip.what and "the next run places it" in tip.what
    assert "3 of these pairs" in tip.evidence and "6.0 MB" in tip.evidence
    assert tip.saving_bytes == 6 * MB


def test_a_pairs_saving_leaves_out_the_other_inputs_the_consumer_would_still_fetch():
    run = RecordedRun(mode="round-robin")
    run.task("big-0", "A", 3 * MB)
    run.task("side-0", "B", 1 * MB)
    run.task("join-0", "B", 8, "big-0", "side-0")  # on A it would fetch side-0's 1 MB
    [tip] = build(run, "dask").suggestions
    assert tip.what.startswith("keep big-0 -> join-0 on one worker: run with placement 'locality'")
    assert tip.saving_bytes == 2 * MB
    assert "3.0 MB moved" in tip.evidence and "would still have fetched 1.0 MB" in tip.evidence


def test_a_reduce_whose_inputs_were_mostly_elsewhere_is_told_where_to_run():
    run = RecordedRun()
    for k in range(4):  # three of its four inputs on A
        run.task(f"part-{k}", "A" if k < 3 else "B", 2 * MB)
    run.task("total-0", "B", 8, *(f"part-{k}" for k in range(4)))
    [tip] = build(run, "dask").suggestions
    assert tip.what.startswith("run total-0 on A: it was sent without a placement hint")
    assert tip.saving_bytes == 4 * MB  # it fetched three, on A it would have fetched one
    assert "fetched 6.0 MB from 3 task(s)" in tip.evidence and "would have fetched 2.0 MB" in tip.evidence


def test_a_hinted_task_that_dask_ran_elsewhere_says_so():
    run = RecordedRun()
    run.task("make-0", "A", 5 * MB)
    run.task("step-0", "B", 5 * MB, "make-0", hinted="A")
    [tip] = build(run, "dask").suggestions
    assert tip.what.startswith("keep make-0 -> step-0 on one worker: placement sent it there, but "
                               "Dask ran it on another worker")
    assert tip.saving_bytes == 5 * MB


def test_a_report_with_no_inputs_on_the_cluster_says_why_its_local_share_is_blank():
    run = RecordedRun()
    run.task("alone-0", "A", MB)
    text = str(build(run, "dask"))
    assert "input bytes already local: - (no task on the cluster took another task's result)" in text
    assert "of 0 B" not in text


def test_results_brought_here_as_the_runs_own_client_closed_are_named():
    run = RecordedRun()
    run.task("part-0", "A", 12 * MB)
    run.backend.client_bytes = run.backend.closing_bytes = 12 * MB
    rep = build(run, "dask")
    assert rep.bytes_at_close == 12 * MB
    assert "to the notebook: 12.0 MB (12.0 MB of it as the run's own client closed)" in str(rep)
    [tip] = rep.suggestions
    assert tip.what.startswith("run with a distributed.Client that stays open")
    assert "backend='dask' or a scheduler address" in tip.evidence and tip.saving_bytes == 12 * MB


def test_a_run_on_its_own_client_counts_what_it_brought_here_at_its_end(tmp_path):
    # a map's items are held (its collector takes them), so a run whose client closes with it
    # brings them here: the report says that is why they came
    import numpy as np
    from dask_clusters import own_client

    import nbflow as nf

    @nf.task
    def listing(n: int) -> list[int]:
        return list(range(n))

    @nf.task
    def block(i: int):
        return np.full(MB // 8, float(i))

    @nf.task
    def first(xs) -> float:
        return float(xs[0][0])

    with nf.Workflow("closing") as wf:
        first(block.map(listing(3)))
    with own_client() as client:
        run = wf.run(backend=client.scheduler.address, cache=False)  # its own client
        rep = run.locality_report()
    # the three 1 MB items and the small final result (the list of names was fetched to
    # expand the map, as run[ref] would fetch it: not counted here)
    assert 3 * MB <= rep.bytes_at_close < 3 * MB + 1000
    assert rep.bytes_to_client >= rep.bytes_at_close
    assert "3.0 MB of it as the run's own client closed" in str(rep)
