"""What preparing a run reads of its workflow's history: the answers of the old full reads,
at a cost that follows the graph being prepared, not the store.

The reference below is the query every room used before: every completed, uncached attempt
of the recent runs grouped by task and key.  The new reads (per-task sums written as a run
ends, per-key means for the graph's keys only) must give the same numbers: on runs with and
without a summary, and when the graph's keys moved to other node indexes.  Their cost is
counted in SQLite virtual-machine steps (a progress handler), never in time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from journal_spy import statements_sent

import nbflow as nf
from nbflow.predict.memory import predicted_peaks
from nbflow.store import journal as journal_mod
from nbflow.store import recent
from nbflow.store.store import get_store
from nbflow.workflow import prepare, run_options


@nf.task
def make(n: int) -> bytes:
    return b"x" * n


@nf.task
def total(parts: list[bytes]) -> int:
    return sum(len(p) for p in parts)


Means = tuple[dict[str, float], dict[str, float]]


def _reference(column: str, workflow: str, exclude_run: str = "") -> Means:
    """The means as the rooms read them before: one GROUP BY over every attempt."""
    store = get_store()
    ids = recent._recent_runs(store, workflow, exclude_run, recent.RECENT_RUNS)
    if not ids:
        return {}, {}
    rows = store.journal.query(
        f"SELECT n.task, t.key, SUM(t.{column}), COUNT(*) FROM task_runs t "
        "JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx "
        f"WHERE t.run_id IN ({','.join('?' * len(ids))}) AND t.state = 'completed' "
        f"AND t.cached = 0 AND t.{column} IS NOT NULL GROUP BY n.task, t.key", ids)
    by_key = {k: s / c for _, k, s, c in rows}
    sums: dict[str, list[float]] = {}
    for name, _, s, c in rows:
        acc = sums.setdefault(name, [0.0, 0.0])
        acc[0] += s
        acc[1] += c
    return {n: s / c for n, (s, c) in sums.items()}, by_key


def _graph(sizes: list[int], extra_first: bool = False) -> Any:
    with nf.Workflow("hist") as wf:
        if extra_first:  # (moves every other call to the next node index)
            make(7)
        parts = make.map(sizes)
        total(parts)
    return wf


def _same(got: tuple[dict[str, float], dict[str, float]], want: tuple[dict[str, float], dict[str, float]],
          keys: list[str]) -> None:
    assert got[0] == pytest.approx(want[0], rel=1e-12)
    assert got[1] == pytest.approx({k: v for k, v in want[1].items() if k in set(keys)}, rel=1e-12)


def test_means_for_the_graphs_keys_equal_the_full_reads_with_and_without_summaries() -> None:
    _graph([100, 200, 300]).run(cache=False)
    _graph([400, 500, 600, 700, 800]).run(cache=False)
    _graph([10, 20]).run(cache=False)
    store = get_store()
    assert store.journal.query("SELECT COUNT(*) FROM task_means WHERE task = ''")[0][0] == 3
    for wf in (_graph([1, 2, 3, 4]), _graph([1] * 9), _graph([5, 6], extra_first=True)):
        keys = [r.key for r in wf.nodes]
        for column in ("output_bytes", "duration_s", "cpu_s"):
            _same(recent.recent_means(column, "hist", keys=keys), _reference(column, "hist"), keys)
    # Runs journaled before the summaries existed (or whose process died before the end):
    # the same answers, read from their attempts.
    store.journal.query("DELETE FROM task_means WHERE run_id = (SELECT MIN(run_id) FROM task_means)")
    keys = [r.key for r in _graph([1, 2, 3, 4, 5]).nodes]
    _same(recent.recent_means("output_bytes", "hist", keys=keys), _reference("output_bytes", "hist"), keys)
    store.journal.query("DELETE FROM task_means")
    _same(recent.recent_means("output_bytes", "hist", keys=keys), _reference("output_bytes", "hist"), keys)
    # Without keys: every key of the recent runs, as before.
    _same(recent.recent_means("output_bytes", "hist"), _reference("output_bytes", "hist"),
          list(_reference("output_bytes", "hist")[1]))


def test_keys_that_moved_to_other_node_indexes_are_found_by_name() -> None:
    _graph([100, 200, 300], extra_first=True).run(cache=False)  # make-0 is the extra call
    wf = _graph([1, 2, 3])  # make-0 .. make-2 sit one index lower than in the stored run
    keys = [r.key for r in wf.nodes]
    got = recent.recent_means("output_bytes", "hist", keys=keys)
    want = _reference("output_bytes", "hist")
    _same(got, want, keys)
    assert {"make-0", "make-1", "make-2"} <= set(got[1])
    durations = recent.recent_means("duration_s", "hist", keys=keys)
    _same(durations, _reference("duration_s", "hist"), keys)
    assert "total-0" in durations[1]


_SUMS = ", ".join(f"COUNT(CASE WHEN t.cached = 0 THEN t.{c} END), SUM(CASE WHEN t.cached = 0 THEN t.{c} END)"
                  for c in ("duration_s", "output_bytes", "input_bytes", "cpu_s", "peak_rss"))


def _summary_equals_attempts(run_id: str) -> set[str]:
    """Every task_means row of the run equals SQLite's sums over its stored attempts."""
    journal = get_store().journal
    journal.flush()
    rows = {r[0]: r[1:] for r in journal.query(
        "SELECT task, n_duration, sum_duration, n_output, sum_output, n_input, sum_input, n_cpu, sum_cpu, "
        "n_rss, sum_rss, peaks FROM task_means WHERE run_id = ?", (run_id,))}
    for name, got in rows.items():
        (want,) = journal.query(
            f"SELECT {_SUMS}, COUNT(t.peak_rss) FROM task_runs t JOIN nodes x ON x.run_id = t.run_id "
            "AND x.idx = t.idx WHERE t.run_id = ? AND t.state = 'completed' AND (x.task = ? OR ? = '')",
            (run_id, name, name))
        assert [v is None for v in got] == [v is None for v in want], name
        assert [v for v in got if v is not None] == pytest.approx([v for v in want if v is not None],
                                                                  rel=1e-12), name
    return set(rows)


def test_summaries_of_batched_partly_cached_maps_equal_the_stored_attempts() -> None:
    with nf.Workflow("sums") as wf:
        total(make.map(list(range(1, 201))))
    first = wf.run()
    with nf.Workflow("sums") as wf:
        total(make.map(list(range(1, 401))))  # half of the items come from the cache
    second = wf.run()
    assert second.tasks["cached"].sum() >= 200
    for run in (first, second):
        assert _summary_equals_attempts(run.id) == {"", "make", "total", "make.map"}


def test_a_run_leaves_one_summary_row_per_task_equal_to_its_attempts() -> None:
    run = _graph([100, 200, 300]).run(cache=False)
    rows = {r[0]: r[1:] for r in get_store().journal.query(
        "SELECT task, n_output, sum_output, n_duration, peaks FROM task_means WHERE run_id = ?", (run.id,))}
    assert set(rows) == {"", "make", "total", "make.map"}
    for name, (n, s, _, _) in rows.items():
        (want,) = get_store().journal.query(
            "SELECT COUNT(t.output_bytes), SUM(t.output_bytes) FROM task_runs t JOIN nodes x "
            "ON x.run_id = t.run_id AND x.idx = t.idx WHERE t.run_id = ? AND t.state = 'completed' "
            "AND t.cached = 0 AND (x.task = ? OR ? = '')", (run.id, name, name))
        assert (n, s) == want
    assert rows["make"][0] == 3 and rows["make"][1] >= 600
    assert rows[""][2] == 5 and rows[""][3] == 0  # every completed node; no peak on threads
    # Cached attempts are not measurements of the task: not summed.
    again = _graph([100, 200, 300]).run()
    again2 = _graph([100, 200, 300]).run()
    cached = get_store().journal.query(
        "SELECT n_output, n_duration FROM task_means WHERE run_id = ? AND task = 'make'", (again2.id,))
    assert again.id != again2.id and cached == [(0, 0)]


@contextmanager
def _counted() -> Iterator[dict[str, int]]:
    """SQLite work done by nbflow's connections in the block: virtual-machine steps (in
    units of 100) and statements."""
    seen = {"steps": 0, "statements": 0}
    real = journal_mod.connect
    journal_mod.close_kept_readers()  # (a run's preparation keeps its reader for the next one)

    def counting(*a: Any, **k: Any) -> sqlite3.Connection:
        conn = real(*a, **k)

        def step() -> int:
            seen["steps"] += 1
            return 0

        conn.set_progress_handler(step, 100)
        conn.set_trace_callback(lambda _sql: seen.__setitem__("statements", seen["statements"] + 1))
        return conn

    journal_mod.connect = counting
    try:
        yield seen
    finally:
        journal_mod.connect = real
        journal_mod.close_kept_readers()


@nf.task
def tick(x: int) -> int:
    return x


def _small() -> Any:
    with nf.Workflow("grow") as wf:
        a = tick(1)
        tick(a)
    return wf


def _prepare_cost(wf: Any) -> int:
    get_store().journal.flush()
    with _counted() as seen:
        run = prepare(wf, run_options(wf, cache=False))
        assert run.learned_priorities  # (history was read and used)
    # A prepared run holds the journal's writer open until it ends: run it, so that no
    # writer thread outlives this test (later tests count them).
    run.start_in_thread()
    run.wait()
    return seen["steps"]


def test_preparing_a_small_graph_reads_as_much_after_a_long_map_as_after_a_short_one() -> None:
    def history(n: int) -> None:
        with nf.Workflow("grow") as wf:
            a = tick(1)
            tick(a)
            tick.map(list(range(n)))
        wf.run(cache=False)

    history(50)
    short = _prepare_cost(_small())
    history(5000)
    long = _prepare_cost(_small())
    # The full reads grew with every stored attempt (~100x more here); these do not.
    assert long < 2 * short + 50, (short, long)


def test_a_maps_items_over_several_runs_cost_a_row_per_item_and_run_and_give_the_full_means() -> None:
    def graph(n: int) -> Any:
        with nf.Workflow("maps") as wf:
            tick.map(list(range(n)))
        return wf

    graph(400).run(cache=False)
    one = _prepare_cost(graph(400))
    for n in (400, 150, 700):  # the same graph, a shorter and a longer map, over one stored run
        keys = [r.key for r in graph(n).nodes]
        _same(recent.recent_means("duration_s", "maps", keys=keys), _reference("duration_s", "maps"), keys)
    two = _prepare_cost(graph(400))  # (each preparation measured is then run: one more run)
    for _ in range(3):
        graph(400).run(cache=False)
    six = _prepare_cost(graph(400))
    # Six runs' rows for the same 400 keys against two runs': at most three times as much
    # work (and the per-task means cost a row per task and run, not one per attempt).  Over
    # several runs of the same graph, SQLite sums the rows per node (a sort: more VM steps per
    # row than the one-run read, whose rows Python takes as they are, but less CPU than
    # handing every row to Python), so several runs are compared with several.
    assert six < 3.5 * two and two < 8 * one, (one, two, six)
    keys = [r.key for r in graph(400).nodes]
    _same(recent.recent_means("duration_s", "maps", keys=keys), _reference("duration_s", "maps"), keys)


def test_peak_memory_is_not_read_from_runs_whose_summary_counts_no_peak() -> None:
    with nf.Workflow("peaks") as wf:
        tick.map(list(range(3000)))
    run = wf.run(cache=False)
    get_store().journal.flush()
    with _counted() as seen:
        assert predicted_peaks("peaks") == {}
    skipped = seen["steps"]
    # The same run as an older nbflow left it (no summary): its attempts are read.
    get_store().journal.query("DELETE FROM task_means WHERE run_id = ?", (run.id,))
    with _counted() as seen:
        assert predicted_peaks("peaks") == {}
    assert seen["steps"] > 10 * skipped + 100, (skipped, seen["steps"])


def test_summaries_of_process_runs_count_their_peaks_and_memory_reads_them() -> None:
    with nf.Workflow("procsums") as wf:
        total([make(100)])
        total(make.map([10, 20, 30, 40]))
    run = wf.run(backend="process", cache=False)
    assert _summary_equals_attempts(run.id) == {"", "make", "total", "make.map"}
    (peaks,) = get_store().journal.query(
        "SELECT peaks FROM task_means WHERE run_id = ? AND task = ''", (run.id,))
    assert peaks[0] >= 5  # (every attempt in a worker process records its peak)
    assert predicted_peaks("procsums")["make"] > 0


def _weights_as_before(names: list[str], kinds: list[str], means: dict[str, float], keys: list[str],
                       key_means: dict[str, float]) -> list[float] | None:
    import statistics

    own = [key_means.get(key, means.get(n)) if k in ("task", "undo") else None
           for n, k, key in zip(names, kinds, keys, strict=True)]
    known = [w for w in own if w is not None]
    if not known:
        return None
    fallback = statistics.median(known)
    return [(0.0 if k not in ("task", "undo") else w if w is not None else fallback) + 1e-9
            for w, k in zip(own, kinds, strict=True)]


def test_learned_weights_are_the_same_numbers_as_before() -> None:
    import random

    from nbflow.predict.priorities import learned_weights

    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(0, 12)
        names = [rng.choice("abc") for _ in range(n)]
        kinds = [rng.choice(["task", "task", "undo", "map", "collect"]) for _ in range(n)]
        keys = [f"{a}-{i}" for i, a in enumerate(names)]
        means = {a: rng.choice([0.0, 1.5, 3.25]) for a in "abc" if rng.random() < 0.5}
        key_means = {k: rng.choice([0.0, 2.0, 7.5]) for k in keys if rng.random() < 0.4}
        assert learned_weights(names, kinds, means, keys, key_means) == \
            _weights_as_before(names, kinds, means, keys, key_means)


def test_gc_removes_the_summaries_of_the_runs_it_removes() -> None:
    from nbflow.store.gc import gc

    runs = [_graph([1, 2]).run(cache=False) for _ in range(3)]
    gc(keep_last=1)
    left = {r for (r,) in get_store().journal.query("SELECT DISTINCT run_id FROM task_means")}
    assert left == {runs[-1].id}


def test_a_runs_preparation_reads_through_the_connection_the_previous_one_kept() -> None:
    _graph([1, 2]).run(cache=False)
    _prepare_cost(_graph([1, 2]))  # (opens the reader, then closed by the counting helper)
    prepare(_graph([1, 2]), run_options(_graph([1, 2]), cache=False))
    with _counted_opens() as opened:
        for _ in range(3):
            run = prepare(_graph([1, 2]), run_options(_graph([1, 2]), cache=False))
            assert run.learned_priorities
    assert opened == []  # (each would cost ~0.6 ms of CPU: the file, the pragmas)
    # A store replaced under the same path is not read through the old file's connection.
    import shutil

    store = get_store()
    store.journal.flush()
    path = store.journal.path
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    shutil.copy(path, path.with_name("copy.sqlite"))
    path.with_name("copy.sqlite").replace(path)  # (the same content, another file)
    with _counted_opens() as opened:
        prepare(_graph([1, 2]), run_options(_graph([1, 2]), cache=False))
    assert len(opened) == 1


@contextmanager
def _counted_opens() -> Iterator[list[Any]]:
    opened: list[Any] = []
    real = journal_mod.connect

    def counting(*a: Any, **k: Any) -> sqlite3.Connection:
        opened.append(a)
        return real(*a, **k)

    journal_mod.connect = counting
    try:
        yield opened
    finally:
        journal_mod.connect = real


def test_durations_and_output_sizes_asked_together_are_read_in_one_pass() -> None:
    for _ in range(2):
        _graph([100, 200, 300]).run(cache=False)
    _graph([100, 200, 300], extra_first=True).run(cache=False)  # (keys at other indexes too)
    keys = [r.key for r in _graph([100, 200, 300]).nodes]
    get_store().journal.flush()

    def read(together: tuple[str, ...]) -> tuple[dict[str, int], Means, Means]:
        with _counted() as seen, recent.one_answer_per_query(together):
            durations = recent.recent_means("duration_s", "hist", keys=keys)
            sizes = recent.recent_means("output_bytes", "hist", keys=keys)
            assert recent.recent_means("output_bytes", "hist", keys=keys) == sizes  # (asked once)
        return seen, durations, sizes

    apart, durations, sizes = read(())
    one, durations_1, sizes_1 = read(("duration_s", "output_bytes"))
    with _counted() as alone, recent.one_answer_per_query():
        recent.recent_means("duration_s", "hist", keys=keys)
    assert one["statements"] == alone["statements"] < apart["statements"]
    assert (durations_1, sizes_1) == (durations, sizes)
    _same(sizes_1, _reference("output_bytes", "hist"), keys)
    _same(durations_1, _reference("duration_s", "hist"), keys)
    assert sizes_1[1] and durations_1[1]  # (both were found: the comparison compared numbers)
    with pytest.raises(ValueError, match="peak_memory"), recent.one_answer_per_query(("peak_memory",)):
        pass


def test_a_dask_runs_preparation_reads_durations_and_sizes_together(monkeypatch, dask_cluster) -> None:
    import distributed

    from nbflow import workflow as workflow_mod

    asked: list[tuple[str, ...]] = []
    real = workflow_mod.one_answer_per_query

    def spy(together: tuple[str, ...] = ()) -> Any:
        asked.append(tuple(together))
        return real(together)

    monkeypatch.setattr(workflow_mod, "one_answer_per_query", spy)
    wf = _graph([1, 2])
    assert wf.run(cache=False).status == "completed"
    assert asked == [()]  # the thread backend places nothing: durations alone
    with distributed.Client(dask_cluster, set_as_default=False) as client:
        assert wf.run(cache=False, backend=client).status == "completed"
    assert asked == [(), ("duration_s", "output_bytes")]


def rows_returned(monkeypatch: pytest.MonkeyPatch, needle: str) -> list[int]:
    """The number of rows each journal query whose SQL contains ``needle`` returns, from
    now on (the store's pending rows written first)."""
    store = get_store()
    store.journal.flush()
    returned: list[int] = []
    real = store.journal.query

    def counted(sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        rows = real(sql, params)
        if needle in sql:
            returned.append(len(rows))
        return rows

    monkeypatch.setattr(store.journal, "query", counted)
    return returned


def test_runs_of_the_same_graph_come_back_as_a_row_per_node_not_per_node_and_run(monkeypatch) -> None:
    def graph(n: int) -> Any:
        with nf.Workflow("same") as wf:
            tick.map(list(range(n)))
        return wf

    for _ in range(3):
        graph(60).run(cache=False)
    returned = rows_returned(monkeypatch, "FROM task_runs")
    keys = [r.key for r in graph(60).nodes]
    got = recent.recent_means("duration_s", "same", keys=keys)
    assert returned == [len(keys)]  # (a row per node: 60 items and the map's own)
    _same(got, _reference("duration_s", "same"), keys)
    returned.clear()
    keys = [r.key for r in graph(80).nodes]  # a longer map: no run holds the last keys
    got = recent.recent_means("duration_s", "same", keys=keys)
    assert returned[0] == 3 * 61  # (row by row, to find what each run holds)
    _same(got, _reference("duration_s", "same"), keys)


def test_keys_looked_for_in_every_run_cost_the_same_statements_for_two_runs_or_five(monkeypatch) -> None:
    store = get_store()
    statements: list[str] = []
    real = store.journal.query

    def counted(sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        statements.append(sql)
        return real(sql, params)

    keys = [r.key for r in _graph([100, 200, 300]).nodes]
    counts = []
    for runs in (2, 5):
        while len(recent._recent_runs(store, "hist", "", recent.RECENT_RUNS)) < runs:
            _graph([100, 200, 300], extra_first=True).run(cache=False)  # (every key moved)
        store.journal.flush()
        statements.clear()
        monkeypatch.setattr(store.journal, "query", counted)
        got = recent.recent_means("duration_s", "hist", keys=keys)
        monkeypatch.setattr(store.journal, "query", real)
        _same(got, _reference("duration_s", "hist"), keys)
        assert got[1]  # (the moved keys were found by name)
        counts.append(len(statements))
    assert counts[0] == counts[1], counts  # a statement for all the runs, not one per run


def _statements_of_prepare(wf: Any) -> tuple[Any, list[str]]:
    """The run ``wf`` prepares and the SQL its preparation ran (through journal.query)."""
    store = get_store()
    store.journal.flush()
    with statements_sent(store) as seen:
        run = prepare(wf, run_options(wf, cache=False))
    run.start_in_thread()  # (a prepared run holds the journal's writer until it ends)
    run.wait()
    return run, seen


def test_with_history_the_durations_answer_whether_there_is_any() -> None:
    """A run with history asks no question of its own for "is there history?": the
    durations the priorities read (kept for placement too) say so.  A first run still asks
    it, and only it: nothing else is read when it says no."""
    with nf.Workflow("asks-once") as wf:
        tick(tick(1))
    first, asked_first = _statements_of_prepare(wf)
    assert recent._ANY_SQL in asked_first  # (nothing to read means from: the cheap question)
    assert not first.learned_priorities
    assert not any("peak_rss" in sql for sql in asked_first)  # (no memory read on a first run)
    again, asked_again = _statements_of_prepare(wf)
    assert again.learned_priorities  # (history was read and used)
    assert recent._ANY_SQL not in asked_again, "a run with history asked whether there was any"


def test_runs_served_from_the_cache_only_still_ask_whether_there_is_history() -> None:
    """Durations come from attempts that ran: a workflow whose runs were all served from
    the cache (another workflow ran the same calls) has none, so the question is asked as
    before, and says no."""
    def build(name: str) -> Any:
        with nf.Workflow(name) as wf:
            tick(tick(2))
        return wf

    build("fills-the-cache").run()
    served = build("served-from-it").run()
    assert served.tasks["cached"].all()
    run, asked = _statements_of_prepare(build("served-from-it"))
    assert recent._ANY_SQL in asked
    assert not run.learned_priorities
    assert not any("peak_rss" in sql for sql in asked)  # (no history: the other reads skipped)


def test_peaks_too_small_to_be_demanded_are_not_read() -> None:
    """A task's predicted peak (a quantile) is never above its largest recorded peak, so a
    run's preparation reads the peaks of the tasks whose largest reaches the smallest demand
    (``MIN_BYTES``) only: worker processes' peaks (every process or Dask attempt records
    one) rarely do, and then no row is read.  With a bound below them, the same predictions."""
    from nbflow.predict import memory

    with nf.Workflow("smallpeaks") as wf:
        total(make.map([10, 20, 30, 40]))
    wf.run(backend="process", cache=False)
    everything = predicted_peaks("smallpeaks")
    assert everything and max(everything.values()) < memory.MIN_BYTES  # (small workers)
    assert predicted_peaks("smallpeaks", at_least=1) == everything
    assert predicted_peaks("smallpeaks", at_least=memory.MIN_BYTES) == {}

    with pytest.MonkeyPatch.context() as patch:
        rows_read = rows_returned(patch, "peak_rss")
        run = prepare(wf, run_options(wf, cache=False))
    run.start_in_thread()  # (a prepared run holds the journal's writer until it ends)
    run.wait()
    assert rows_read == [0], rows_read  # asked once, and no peak came back
    assert run.predicted_memory == {}


def test_when_no_attempt_reaches_the_smallest_demand_the_peaks_are_not_grouped() -> None:
    """Whether any attempt of the recent runs recorded a peak of ``MIN_BYTES`` is asked of
    the attempts alone (stopping at the first): when none did, the query that groups the
    peaks by task (a join with the nodes and a window over every attempt) is not run, and
    the answer is the same (nothing to demand).  SQLite's work, not time, is compared."""
    from nbflow.predict import memory

    with nf.Workflow("fewpeaks") as wf:
        total(make.map(list(range(150))))
    wf.run(backend="process", cache=False)
    args = ("fewpeaks", "", memory.RECENT_RUNS, memory.MIN_BYTES)
    get_store().journal.flush()
    with _counted() as grouped:
        assert get_store().journal.query(memory._SQL_AT_LEAST, args) == []
    with _counted() as asked:
        assert predicted_peaks("fewpeaks", at_least=memory.MIN_BYTES) == {}
    assert asked["statements"] == 1
    assert asked["steps"] * 3 < grouped["steps"], (asked, grouped)
    # (a bound some attempt reaches still reads the peaks: the same answer as every peak's)
    assert predicted_peaks("fewpeaks", at_least=1) == predicted_peaks("fewpeaks")


def test_summarised_runs_bring_a_row_per_task_to_python_not_one_per_task_and_run(monkeypatch) -> None:
    """When every recent run is summarised, SQLite sums their ``task_means`` rows per task:
    Python gets a row per task (and one counting the runs summarised), with the same means."""
    for sizes in ([1, 2], [3, 4, 5], [6], [7, 8]):
        _graph(sizes).run(cache=False)
    keys = [r.key for r in _graph([1, 2]).nodes]
    want = _reference("duration_s", "hist")
    returned = rows_returned(monkeypatch, "FROM task_means WHERE run_id IN")
    got = recent.recent_means("duration_s", "hist", keys=keys)
    _same(got, want, keys)
    assert set(got[0]) == {"make", "total", "make.map"}
    assert returned == [4], returned  # ('', make, total, make.map): not 4 per run
