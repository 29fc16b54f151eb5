"""The shared benchmark harness (``benchmarks/_harness.py``) and the traces kept in the repo.

The harness's helpers are tested directly; two benchmarks are run as a user runs them (a
subprocess from the repository root, tiny sizes) to check that they still produce their
documented JSON shape through the harness, and that ``makespan.py`` finds the WfFormat traces
kept in ``tests/data/wfcommons`` without any outside directory.  No timing is asserted.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
TRACES = REPO / "tests" / "data" / "wfcommons"
sys.path.insert(0, str(BENCH))

import _harness  # noqa: E402


def test_rotations_sample_every_system_once_per_repeat_and_rotate_the_first() -> None:
    names = ["anyio", "dask", "nbflow"]
    orders = list(_harness.rotations(names, 5))
    assert [r for r, _ in orders] == [0, 1, 2, 3, 4]
    for _, order in orders:
        assert sorted(order) == sorted(names)
    assert [order[0] for _, order in orders] == ["anyio", "dask", "nbflow", "anyio", "dask"]
    assert list(_harness.rotations([], 2)) == [(0, []), (1, [])]


def test_alternate_interleaves_samplers_and_collects_garbage_before_each() -> None:
    calls: list[str] = []
    collections: list[int] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info.get("generation") == 2:
            collections.append(len(calls))

    def sampler(name: str, value: int) -> Callable[[], int]:
        def call() -> int:
            calls.append(name)
            return value

        return call

    gc.callbacks.append(on_gc)
    try:
        out = _harness.alternate({"a": sampler("a", 1), "b": sampler("b", 2)}, 3)
    finally:
        gc.callbacks.remove(on_gc)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert out == {"a": [1, 1, 1], "b": [2, 2, 2]}
    # a full collection ran before every one of the six calls
    assert set(range(6)) <= set(collections)


def test_ratio_meets_and_target() -> None:
    assert _harness.ratio(3.0, 2.0) == 1.5
    assert _harness.ratio(None, 2.0) is None
    assert _harness.ratio(1.0, None) is None
    assert _harness.ratio(1.0, 0.0) is None
    assert _harness.meets(1.0, 1.0, "<=") is True
    assert _harness.meets(1.0, 1.0, "<") is False
    assert _harness.meets(5.0, 3.0, ">=") is True
    assert _harness.meets(3.0, 3.0, ">") is False
    assert _harness.meets(None, 3.0, "<=") is None
    with pytest.raises(ValueError, match="op must be"):
        _harness.meets(1.0, 1.0, "==")
    t = _harness.target(2.5, 2.0, "<=", note="x")
    assert t == {"value": 2.5, "target": 2.0, "op": "<=", "met": False, "note": "x"}


def test_summarize_medians_and_gc_share() -> None:
    s = _harness.summarize([3.0, 1.0, 2.0], 1000)
    assert s["median_s"] == 2.0 and s["min_s"] == 1.0
    assert s["us_per_task"] == pytest.approx(2000.0)
    assert s["samples_s"] == [3.0, 1.0, 2.0]
    assert "gc_share" not in s
    g = _harness.summarize([3.0, 1.0, 2.0], 1000, [(1.0, 1), (0.0, 0), (0.5, 2)])
    assert g["gc_median_s"] == 0.5
    assert g["gc_share"] == pytest.approx(0.25)
    assert g["gc_full_collections_median"] == 1
    # per-sample time minus its own GC time: medians of [2.0, 1.0, 1.5]
    assert g["us_per_task_excluding_gc"] == pytest.approx(1500.0)


def test_gc_timer_counts_time_in_the_collector() -> None:
    timer = _harness.GcTimer()
    gc.callbacks.append(timer)
    try:
        mark = timer.mark()
        gc.collect()
        seconds, full = timer.since(mark)
    finally:
        gc.callbacks.remove(timer)
    assert seconds > 0 and full >= 1


def test_emit_json_prints_and_writes_the_same_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {"a": [1, 2], "b": {"c": None}}
    out = tmp_path / "x.json"
    _harness.emit_json(doc, out)
    printed = capsys.readouterr().out
    assert json.loads(printed) == doc
    assert out.read_text() == printed  # same text, trailing newline included


def test_nbflow_home_restores_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBFLOW_HOME", raising=False)
    with _harness.nbflow_home() as home:
        assert os.environ["NBFLOW_HOME"] == home
        assert Path(home).parent.is_dir()
    assert "NBFLOW_HOME" not in os.environ
    assert not Path(home).parent.exists()  # the throw-away directory is gone

    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / "mine"))
    with _harness.nbflow_home() as home:
        assert home == str(tmp_path / "mine")  # an existing store is kept...
    with _harness.nbflow_home(replace=True) as home:
        assert home != str(tmp_path / "mine")  # ...unless a fresh one is asked for
    with _harness.nbflow_home(tmp_path / "other") as home:
        assert os.environ["NBFLOW_HOME"] == str(tmp_path / "other")
    assert os.environ["NBFLOW_HOME"] == str(tmp_path / "mine")


def test_machine_info_ties_figures_to_the_code() -> None:
    info = _harness.machine_info("9.9")
    assert info["nbflow"] == "9.9"
    assert info["cpu_count"] == os.cpu_count()
    assert info["python"].count(".") == 2
    assert info["nbflow_source_sha256"] == _harness.source_hash(REPO)
    assert len(info["nbflow_source_sha256"]) == 16


def test_source_hash_changes_with_the_source(tmp_path: Path) -> None:
    (tmp_path / "nbflow").mkdir()
    f = tmp_path / "nbflow" / "a.py"
    f.write_text("x = 1\n")
    before = _harness.source_hash(tmp_path)
    f.write_text("x = 2\n")
    assert _harness.source_hash(tmp_path) != before
    assert _harness.source_hash(tmp_path / "nowhere") is None


# ------------------------------------------------------------------- traces in the repo


def test_traces_kept_in_the_repository() -> None:
    assert (TRACES / "LICENSE-LGPL-3.0.md").is_file()
    assert (TRACES / "README.md").is_file()
    stems = {p.stem for p in TRACES.glob("*.json")}
    families = ("helloworld-chain", "helloworld-forkjoin", "1000genome", "blast", "srasearch", "epigenomics")
    for family in families:
        assert any(s.startswith(family) for s in stems), family
    assert _harness.DEFAULT_TRACES == TRACES


def _bench(*args: str, timeout: float = 120) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NBFLOW_HOME"}
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_makespan_replays_a_trace_kept_in_the_repository(tmp_path: Path) -> None:
    out = tmp_path / "one.json"
    doc = _bench("benchmarks/makespan.py", str(TRACES / "helloworld-chain-5-chameleon.json"),
                 "--workers", "2", "--scale", "0.0005", "--repeat", "1", "--quiet", "--json", str(out))
    assert doc["trace"] == "helloworld-chain-5-chameleon" and doc["tasks"] == 5
    assert doc["ratio_to_simulated"] > 0 and len(doc["runs"]) == 1
    assert doc["machine"]["nbflow_source_sha256"] == _harness.source_hash(REPO)
    assert json.loads(out.read_text()) == doc


def test_makespan_all_takes_another_trace_directory(tmp_path: Path) -> None:
    more = tmp_path / "more"
    more.mkdir()
    shutil.copy(TRACES / "helloworld-forkjoin-10-chameleon.json", more)
    doc = _bench("benchmarks/makespan.py", "--all", "--traces", str(more), "--workers", "3",
                 "--scale", "0.0005", "--repeat", "1", "--quiet")
    assert doc["traces_dir"] == str(more)
    assert [r["trace"] for r in doc["results"]] == ["helloworld-forkjoin-10-chameleon"]
    assert set(doc) >= {"max_ratio_to_simulated", "all_within_budget", "machine"}


def test_overhead_keeps_its_json_shape(tmp_path: Path) -> None:
    doc = _bench("benchmarks/overhead.py", "--n", "60", "--repeat", "2", "--shapes", "chain",
                 "--kinds", "async", "--no-scale-check", "--no-memory")
    assert set(doc) == {"machine", "params", "results", "targets"}
    assert doc["params"]["journal"] == "off" and doc["params"]["n"] == 60
    (row,) = doc["results"]
    assert set(row["systems"]) == {"anyio", "dask", "nbflow"}
    for system in row["systems"].values():
        assert len(system["samples_s"]) == 2 and "gc_share" in system
    assert set(row["ratios"]) == {"nbflow_over_anyio", "dask_over_nbflow"}
    t = doc["targets"]["overhead.chain.async.dask_over_nbflow"]
    assert t["target"] == 5.0 and t["design_target"] == 3.0 and isinstance(t["met"], bool)
    assert "graph_build.chain.async.us_per_call" in doc["targets"]
