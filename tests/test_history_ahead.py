"""A run's history questions read ahead (nbflow.predict.ahead): used only while they are
still the journal's answers, and then the very same answers.

Every case compares what a run's preparation is told with what the journal's reads return
now (``recent_means``/``has_history``/the peaks question outside a preparation read the
journal), with ``==``: the answers read ahead are those reads, so they must be equal, not
close.  Whether they were used is what :func:`ahead.use` returns; no case depends on time.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from journal_spy import statements_sent

import nbflow as nf
from nbflow.predict import ahead, memory
from nbflow.store import recent
from nbflow.store.recorder import RUN_END
from nbflow.store.store import get_store
from nbflow.workflow import prepare, run_options

BOTH = ("duration_s", "output_bytes")


@nf.task
def make(n: int) -> bytes:
    return b"x" * n


@nf.task
def total(parts: list[bytes]) -> int:
    return sum(len(p) for p in parts)


@nf.task
def boom(x: int) -> int:
    raise ValueError(f"boom {x}")


def _graph(name: str = "ahead", sizes: tuple[int, ...] = (100, 200, 300)) -> Any:
    with nf.Workflow(name) as wf:
        total(make.map(list(sizes)))
    return wf


def _history(name: str = "ahead", runs: int = 3) -> list[str]:
    for i in range(runs):
        _graph(name, (100 + i, 200, 300)).run(cache=False)
    return [r.key for r in _graph(name).nodes]


def _journal_answers(name: str, exclude: str, keys: list[str]) -> dict[str, Any]:
    """What the journal says now (no preparation block: every question is read)."""
    store = get_store()
    return {
        "means": {c: recent.recent_means(c, name, exclude, store, recent.RECENT_RUNS, keys=keys)
                  for c in BOTH},
        "history": recent.has_history(name, exclude, store),
        "peaks": [memory.any_peak_at_least(store, (name, exclude, memory.RECENT_RUNS), bound)
                  for bound in (0, 1, memory.MIN_BYTES, 2**62)],
        # (memory admission's question once a peak reaches its bound: the peaks by task; at
        # the bound a preparation uses and above, as below it nothing is read ahead)
        "by task": [memory.predicted_peaks(name, exclude, store, at_least=bound)
                    for bound in (_bound(), _bound() + 1, 2**62)],
    }


def _bound() -> float:
    """Memory admission's bound now (``NBFLOW_PREDICTED_MEMORY_MIN``)."""
    return float(os.environ.get("NBFLOW_PREDICTED_MEMORY_MIN", memory.MIN_BYTES))


def _told(name: str, exclude: str, keys: list[str]) -> tuple[bool, dict[str, Any], list[str]]:
    """Inside a preparation's block: whether what was read ahead was used, the answers the
    block's readers get, and the statements they sent to the journal."""
    store = get_store()
    with statements_sent(store) as asked, recent.one_answer_per_query(BOTH):
        used = ahead.use(store, name, exclude, keys)
        got = _journal_answers(name, exclude, keys)
    return used, got, asked


def _set_peaks(peaks: dict[str, list[int]]) -> None:
    """The attempts of each task named recorded these peaks (bytes), in turn over the
    recorded attempts, in every run so far; the runs' summaries say they recorded peaks.
    (A test worker's resident set is rarely as large as memory admission's bound: the peaks a
    cluster's workers record are set, and what is read from them is the same on any machine.)"""
    store = get_store()
    store.journal.flush()
    with sqlite3.connect(store.journal.path) as db:
        for task, values in peaks.items():
            rows = db.execute("SELECT t.run_id, t.idx, t.attempt FROM task_runs t JOIN nodes n "
                              "ON n.run_id = t.run_id AND n.idx = t.idx WHERE n.task = ? "
                              "ORDER BY t.run_id, t.idx, t.attempt", (task,)).fetchall()
            for i, (run_id, idx, attempt) in enumerate(rows):
                db.execute("UPDATE task_runs SET peak_rss = ? WHERE run_id = ? AND idx = ? AND attempt = ?",
                           (values[i % len(values)], run_id, idx, attempt))
        db.execute("UPDATE task_means SET peaks = 1 WHERE task = ''")


def _read_ahead(name: str = "ahead", keys: list[str] | None = None) -> list[str]:
    keys = keys if keys is not None else [r.key for r in _graph(name).nodes]
    store = get_store()
    store.journal.flush()  # (the rows of the runs before are committed: as at a run's release)
    ahead.want(store, name, keys, BOTH)
    ahead.read_ahead(store)
    return keys


def test_answers_read_ahead_are_used_and_are_the_journals_own() -> None:
    keys = _history()
    _read_ahead(keys=keys)
    used, got, asked = _told("ahead", "new-run-id", keys)
    assert used and asked == []  # told, not asked: no statement for the history
    assert got == _journal_answers("ahead", "new-run-id", keys)
    assert got["means"]["duration_s"][1] and got["history"]  # (there was history to compare)


def test_a_preparation_after_reading_ahead_asks_nothing_and_weighs_the_same() -> None:
    keys = _history()
    wf = _graph()
    store = get_store()
    asked: list[str] = []
    real = store.journal.query

    def counting(sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        asked.append(sql)
        return real(sql, params)

    _read_ahead(keys=keys)
    store.journal.query = counting  # type: ignore[method-assign]
    try:
        told = prepare(wf, run_options(wf, cache=False))
    finally:
        del store.journal.query
    with ahead.off():  # (the same history: neither run has started, nothing was written)
        read = prepare(wf, run_options(wf, cache=False))
    for run in (told, read):  # (a prepared run holds the journal's writer until it ends)
        run.start_in_thread()
        run.wait()
    assert not [sql for sql in asked if "task_runs" in sql or "FROM runs" in sql], asked
    assert told.learned_priorities and read.learned_priorities
    assert told._sched.level == read._sched.level


@pytest.mark.parametrize("change", ["run", "failed run", "cache hit run", "queued row", "gc",
                                    "another process", "file replaced"])
def test_anything_written_since_means_the_journal_is_read(change: str, tmp_path: Path) -> None:
    keys = _history()
    store = get_store()
    if change == "file replaced":  # (its WAL folded in first: the copy holds every row)
        store.journal.flush()
        db = sqlite3.connect(store.journal.path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
    _read_ahead(keys=keys)
    if change == "run":
        _graph().run(cache=False)
    elif change == "failed run":
        with nf.Workflow("ahead") as wf:
            boom(1)
        assert wf.run(cache=False, raise_on_error=False).status == "failed"
    elif change == "cache hit run":
        _graph().run()  # (stores its results)
        _read_ahead(keys=keys)
        hit = _graph().run()
        assert hit.tasks["cached"].sum() >= 3  # (every call; the map's own node is no call)
    elif change == "queued row":  # (committed by the preparation's first read, as any row queued)
        oldest = recent._recent_runs(store, "ahead", "", recent.RECENT_RUNS)[-1]
        store.journal.put(RUN_END, ("failed", 1.0, 1.0, "marked failed", oldest))
    elif change == "gc":
        from nbflow.store.gc import gc

        gc(keep_last=1)
    elif change == "another process":
        code = ("import nbflow as nf\n"
                "@nf.task\ndef one(x):\n    return x\n"
                "with nf.Workflow('ahead') as wf:\n    one(1)\n"
                "wf.run(cache=False)\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=120)
    elif change == "file replaced":  # (another file under the same path; this one never
        path = store.journal.path    # written through the path: only its identity tells)
        copy = path.with_name("copy.sqlite")
        shutil.copy(path, copy)
        db = sqlite3.connect(copy)
        db.execute("UPDATE task_runs SET duration_s = duration_s + 1")
        db.commit()
        db.close()
        copy.replace(path)
    used, got, asked = _told("ahead", "new-run-id", keys)
    assert not used and asked  # read from the journal
    assert got == _journal_answers("ahead", "new-run-id", keys)


def test_other_questions_are_read_from_the_journal() -> None:
    keys = _history()
    _history("other", runs=1)
    _read_ahead(keys=keys)
    newest = recent._recent_runs(get_store(), "ahead", "", recent.RECENT_RUNS)[0]
    other_keys = [r.key for r in _graph("ahead", (1, 2)).nodes]
    for name, exclude, graph_keys in [("never-prepared", "x", keys),  # another workflow
                                      ("ahead", "x", other_keys),  # another graph
                                      ("ahead", newest, keys)]:  # a run of the window left out
        used, got, asked = _told(name, exclude, graph_keys)
        assert not used and asked
        assert got == _journal_answers(name, exclude, graph_keys)
    # ... and the questions read ahead still are (nothing was written meanwhile), those of
    # the other workflow prepared last too (the last few graphs are read ahead)
    used, got, asked = _told("ahead", "x", keys)
    assert used and asked == [] and got == _journal_answers("ahead", "x", keys)
    used, got, asked = _told("other", "x", keys)
    assert used and got == _journal_answers("other", "x", keys) and got["means"]["duration_s"][1]
    # (a run on threads reads durations alone: the sizes asked for here are read)
    assert asked and not [sql for sql in asked if "duration_s" in sql], asked


def test_switched_off_preparations_neither_use_nor_ask_for_reading_ahead() -> None:
    with ahead.off():
        keys = _history()  # (prepared switched off: no graph asked for)
    ahead.read_ahead(get_store())
    used, _, asked = _told("ahead", "x", keys)
    assert not used and asked
    _read_ahead(keys=keys)
    with ahead.off():
        used, _, asked = _told("ahead", "x", keys)
    assert not used and asked
    used, _, asked = _told("ahead", "x", keys)
    assert used and asked == []


def test_only_the_last_graphs_prepared_are_read_ahead() -> None:
    names = [f"g{i}" for i in range(ahead.KEPT_GRAPHS + 1)]
    for name in names:
        _history(name, runs=1)
    ahead.read_ahead(get_store())
    keys = [r.key for r in _graph().nodes]
    used = [_told(name, "x", keys)[0] for name in names]
    assert used == [False] + [True] * ahead.KEPT_GRAPHS


def test_nothing_is_read_ahead_for_a_run_once_another_was_prepared_since() -> None:
    """Runs back to back: the read ahead at a run's end, once a later run was prepared on
    the store, reads nothing (that run's rows would make it stale); with no later
    preparation it reads as before."""
    keys = _history()
    store = get_store()
    store.journal.flush()
    ahead.want(store, "ahead", keys, BOTH)
    mine = ahead.preparing(store)
    ahead.preparing(store)  # (the next run, prepared before this one's end-of-run work)
    read: list[str] = []
    real = ahead._read

    def reading(slot: Any, through: Any, workflow: str, *rest: Any) -> Any:
        read.append(workflow)
        return real(slot, through, workflow, *rest)

    ahead._read = reading  # type: ignore[assignment]
    try:
        ahead.read_ahead(store, mine)
        assert read == [] and not _told("ahead", "new-run-id", keys)[0]
        ahead.read_ahead(store, ahead.preparing(store))  # (the latest run's end: it reads)
    finally:
        ahead._read = real  # type: ignore[assignment]
    assert read == ["ahead"]
    used, got, _ = _told("ahead", "new-run-id", keys)
    assert used and got == _journal_answers("ahead", "new-run-id", keys)


def test_a_dask_run_prepared_before_the_previous_ones_read_ahead_makes_it_read_nothing(
        dask_cluster, monkeypatch) -> None:
    """Two Dask runs back to back, the second prepared before the first one's read ahead
    (held until then): the first reads nothing ahead, the second reads its graph."""
    import threading

    import distributed

    second_prepared = threading.Event()
    calls: list[int] = []
    read: list[str] = []
    real_ahead, real_read = ahead.read_ahead, ahead._read

    def held(store: Any, prepared: int | None = None) -> None:
        if not calls:  # (the first run's: after the second run is prepared)
            assert second_prepared.wait(60)
        calls.append(len(read))
        real_ahead(store, prepared)
        calls[-1] = len(read) - calls[-1]  # (graphs read by this call)

    def reading(slot: Any, through: Any, workflow: str, *rest: Any) -> Any:
        read.append(workflow)
        return real_read(slot, through, workflow, *rest)

    monkeypatch.setattr(ahead, "read_ahead", held)
    monkeypatch.setattr(ahead, "_read", reading)
    wf = _graph("ahead-b2b")
    with distributed.Client(dask_cluster, set_as_default=False) as client:
        first = wf.run(backend=client, cache=False)
        second = wf.run(backend=client, cache=False)
        second_prepared.set()
        first.locality.agent.settle()
        second.locality.agent.settle()
    assert calls == [0, 1] and read == ["ahead-b2b"]


def test_a_dask_run_reads_the_next_runs_history_ahead_after_its_end(dask_cluster, monkeypatch) -> None:
    """The end-of-run read of a Dask run whose client stays open journals its transfer rows
    in its own thread, after the caller has its results; the next run's history questions
    are asked there, and the next preparation of the same graph asks none."""
    import distributed

    # (a worker's peak is its process's: after earlier tests on the shared cluster it may
    # pass the default 256 MiB, and memory admission then groups the peaks per task: read
    # ahead too.  A bound every recorded peak reaches makes sure that question is asked.)
    monkeypatch.setenv("NBFLOW_PREDICTED_MEMORY_MIN", "1")

    wf = _graph("ahead-dask")
    with distributed.Client(dask_cluster, set_as_default=False) as client:
        for _ in range(2):
            run = wf.run(backend=client, cache=False)
            run.locality.agent.settle()  # (its end-of-run read, and what it reads ahead, done)
        with statements_sent(get_store()) as asked:
            prepared = prepare(wf, run_options(wf, backend=client, cache=False))
        prepared.start_in_thread()
        prepared.wait()
        prepared.locality.agent.settle()
    assert prepared.status == "completed" and prepared.learned_priorities
    assert not [sql for sql in asked if "task_runs" in sql], asked
    assert prepared.locality.agent.pred_bytes  # (placement got the sizes it was told)
    assert set(prepared.predicted_memory) == {"make", "total"}  # (the peaks it was told)


def test_connections_are_kept_for_the_last_few_stores_only(tmp_path: Path) -> None:
    stores = [get_store(tmp_path / f"store-{i}") for i in range(ahead.KEPT_JOURNALS + 1)]
    opened = []
    for store in stores:
        ahead.want(store, "w", ["a-0"])
        ahead.read_ahead(store)
        opened.append(ahead._slots[store.journal])
    kept = [ahead._slots.get(s.journal) for s in stores]
    assert kept[0] is None and all(kept[1:])
    with pytest.raises(sqlite3.ProgrammingError):  # (closed: no file held open)
        opened[0].conn.execute("SELECT 1")
    assert len(ahead._slots) <= ahead.KEPT_JOURNALS
    first = ahead._slot(stores[0].journal)  # (opened again: the oldest kept one goes)
    assert first is not None and ahead._slots.get(stores[1].journal) is None


def test_nothing_is_read_ahead_once_its_connections_closed_at_exit(monkeypatch) -> None:
    """At exit the kept connections close before the journals do (the last connection to a
    journal folds its WAL into the file); an end-of-run read finishing later (the locality
    room reads at exit) must not open one again."""
    keys = _history()
    store = get_store()
    monkeypatch.setitem(ahead._state, "exiting", False)  # (put back after the test)
    _read_ahead(keys=keys)
    slot = ahead._slots[store.journal]
    ahead._close_all()
    with pytest.raises(sqlite3.ProgrammingError):
        slot.conn.execute("SELECT 1")
    ahead.read_ahead(store)
    assert store.journal not in ahead._slots


def test_a_preparation_told_its_history_keeps_the_reader_for_the_next_that_reads(monkeypatch) -> None:
    """The reader a preparation keeps for the next one (opening one costs ~0.6 ms of CPU)
    outlives a preparation that read nothing, having been told its history ahead."""
    from nbflow.store import journal as journal_mod

    keys = _history()
    wf = _graph()
    opened: list[Any] = []
    real = journal_mod.connect

    def counting(*a: Any, **k: Any) -> sqlite3.Connection:
        opened.append(a)
        return real(*a, **k)

    def prepared(off: bool) -> Any:
        if off:
            with ahead.off():
                run = prepare(wf, run_options(wf, cache=False))
        else:
            run = prepare(wf, run_options(wf, cache=False))
        return run

    used: list[bool] = []
    real_use = ahead.use
    monkeypatch.setattr(ahead, "use", lambda *a: used.append(real_use(*a)) or used[-1])
    reading = prepared(off=True)  # (reads: its reader is kept)
    _read_ahead(keys=keys)
    monkeypatch.setattr(journal_mod, "connect", counting)
    told = prepared(off=False)  # (told: reads nothing)
    again = prepared(off=True)  # (reads through the reader kept before)
    monkeypatch.setattr(journal_mod, "connect", real)
    for run in (reading, told, again):  # (a prepared run holds the journal's writer until it ends)
        run.start_in_thread()
        run.wait()
    assert used == [False, True, False]  # (the second was told)
    assert opened == []


def test_a_graph_larger_than_the_bound_is_not_read_ahead(monkeypatch) -> None:
    monkeypatch.setattr(ahead, "LARGEST_GRAPH", len(_graph().nodes) - 1)
    keys = _history()  # (its preparations ask for it: refused)
    _read_ahead(keys=keys)  # (so does this)
    assert ahead._graphs.get(get_store().journal, {}) == {}
    used, got, asked = _told("ahead", "x", keys)
    assert not used and asked and got == _journal_answers("ahead", "x", keys)


MiB = 2**20


@pytest.mark.parametrize("bound", [None, 1, 350 * MiB, 2**50])
def test_the_peaks_by_task_are_read_ahead_when_one_reaches_the_bound(bound: int | None, monkeypatch) -> None:
    """On a cluster a worker's peak often passes memory admission's bound: then a
    preparation groups the recent peaks by task.  That question is read ahead too (for the
    bound set when it is read), and its answer is the journal's, with ``==``."""
    if bound is not None:
        monkeypatch.setenv("NBFLOW_PREDICTED_MEMORY_MIN", str(bound))
    keys = _history()
    _set_peaks({"make": [300 * MiB, 200 * MiB, 400 * MiB], "total": [100 * MiB]})
    _read_ahead(keys=keys)
    used, got, asked = _told("ahead", "new-run-id", keys)
    assert used and asked == []  # told, not asked: the peaks by task included
    assert got == _journal_answers("ahead", "new-run-id", keys)
    read = ahead._slots[get_store().journal].answers[("ahead", tuple(keys))].peaks
    if bound == 2**50:  # (no peak reaches it: nothing to group, nothing grouped)
        assert read is None and got["by task"] == [{}, {}, {}]
    else:  # (the tasks a peak of which reaches the bound are there: a demand to admit)
        assert read is not None and read[0] == _bound()
        assert set(got["by task"][0]) == ({"make", "total"} if bound == 1 else {"make"})


def test_peaks_by_task_read_ahead_for_a_higher_bound_are_read_again_for_a_lower(monkeypatch) -> None:
    keys = _history()
    _set_peaks({"make": [300 * MiB], "total": [100 * MiB]})
    _read_ahead(keys=keys)  # (at the default bound: "make" alone)
    monkeypatch.setenv("NBFLOW_PREDICTED_MEMORY_MIN", str(50 * MiB))  # (changed since)
    used, got, asked = _told("ahead", "new-run-id", keys)
    assert used and [sql for sql in asked if "PARTITION BY" in sql]  # (read for this bound)
    assert got == _journal_answers("ahead", "new-run-id", keys)
    assert set(got["by task"][0]) == {"make", "total"}


def test_a_preparation_told_the_peaks_by_task_demands_the_same_memory(monkeypatch) -> None:
    keys = _history()
    _set_peaks({"make": [300 * MiB, 500 * MiB], "total": [100 * MiB]})
    wf = _graph()
    store = get_store()
    runs = []
    for read_ahead in (True, False):
        if read_ahead:
            _read_ahead(keys=keys)
            with statements_sent(store) as asked:
                runs.append(prepare(wf, run_options(wf, cache=False)))
        else:
            with ahead.off():
                runs.append(prepare(wf, run_options(wf, cache=False)))
        runs[-1].start_in_thread()  # (a prepared run holds the journal's writer until it ends)
        runs[-1].wait()
    assert not [sql for sql in asked if "task_runs" in sql], asked
    assert runs[0].predicted_memory == runs[1].predicted_memory
    assert set(runs[0].predicted_memory) == {"make"}


def test_the_peaks_read_row_by_row_are_those_sqlites_window_chooses() -> None:
    """The read-ahead reads every attempt's peak and chooses the tasks itself (no window
    sort): for every bound, the same tasks with the same peaks as the preparation's query,
    attempts that recorded 0 and tasks all of whose attempts did included."""
    _history()
    _set_peaks({"make": [300 * MiB, 0, 200 * MiB], "total": [0]})
    store = get_store()
    args = ("ahead", "", memory.RECENT_RUNS)
    for bound in (-1, 0, 1, 200 * MiB, 250 * MiB, 300 * MiB, 300 * MiB + 1):
        window = memory.peaks_at_least(store, args, bound)
        assert memory.peaks_at_least(store, args, bound, every_row=True) == window
    assert set(memory.peaks_at_least(store, args, 0)) == {"make"}  # (0 predicts nothing)


def test_a_graphs_read_ahead_sends_each_statement_once_and_no_history_question_when_durations_say_it(
        ) -> None:
    """The window's runs are asked once per graph (the read-ahead's check and the means ask
    the same statement), and "is there history" is not asked when a mean duration is named
    (it comes from an attempt that ran: the preparation does not ask it either); the answers
    are still the journal's."""
    keys = _history()
    _read_ahead(keys=keys)  # (opens the kept connection)
    sent: list[str] = []
    ahead._slots[get_store().journal].conn.set_trace_callback(sent.append)
    _read_ahead(keys=keys)
    ahead._slots[get_store().journal].conn.set_trace_callback(None)
    assert len([sql for sql in sent if "SELECT MAX(n.idx) FROM nodes" in sql]) == 1, sent
    assert not [sql for sql in sent if "t.duration_s IS NOT NULL" in sql and "LIMIT 1" in sql], sent
    used, got, asked = _told("ahead", "new-run-id", keys)
    assert used and asked == [] and got["history"]
    assert got == _journal_answers("ahead", "new-run-id", keys)
