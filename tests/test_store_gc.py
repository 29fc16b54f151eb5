"""Retention: nf.gc() and the ``nbflow gc`` / ``nbflow runs`` commands."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nbflow as nf
from nbflow.cli import main
from nbflow.store import gc, get_store, load_run, runs
from nbflow.store.gc import parse_age


@nf.task
def blob(tag, n):
    return (tag * n).encode()  # > 32 kB: a file


@nf.task
def tiny(tag):
    return tag


def run_once(tag: str, n: int = 50_000) -> nf.Run:
    with nf.Workflow("ret") as wf:
        blob(tag, n)
        tiny(tag)
    return wf.run()


def files() -> set[str]:
    return {k for k, *_ in get_store().blobs.files() if k}


def age_runs(seconds_by_id: dict[str, float]) -> None:
    """Pretend runs started that long ago (a frozen clock, without patching time)."""
    db = sqlite3.connect(get_store().journal.path)
    try:
        now = time.time()
        for rid, ago in seconds_by_id.items():
            db.execute("UPDATE runs SET start = ?, end = ? WHERE id = ?", (now - ago, now - ago + 1, rid))
        db.commit()
    finally:
        db.close()


def hits(tag: str) -> list[bool]:
    return [bool(c) for c in run_once(tag).tasks["cached"]]


def test_keep_last_removes_older_runs_and_only_their_results():
    a, b, c = run_once("a"), run_once("b"), run_once("c")
    age_runs({a.id: 300, b.id: 200, c.id: 100})
    before = files()
    assert len(before) == 3
    dry = gc(keep_last=2, dry_run=True)
    assert [r[0] for r in dry.runs_removed] == [a.id] and dry.results_removed == 2
    assert files() == before and len(runs()) == 3  # a dry run changes nothing
    assert "would remove 1 run(s)" in str(dry)
    report = gc(keep_last=2)
    assert [r[0] for r in report.runs_removed] == [a.id]
    assert report.bytes_freed >= 50_000
    assert list(runs()["id"]) == [c.id, b.id]  # newest first
    assert len(files()) == 2
    with pytest.raises(KeyError):
        load_run(a.id)
    assert hits("b") == [True, True] and hits("c") == [True, True]  # kept runs' results still serve
    assert hits("a") == [False, False]


def test_a_result_shared_with_a_kept_run_is_never_removed():
    old = run_once("same")
    new = run_once("same")  # all hits: references the same results
    age_runs({old.id: 1000, new.id: 10})
    report = gc(keep_last=1)
    assert [r[0] for r in report.runs_removed] == [old.id]
    assert report.results_removed == 0
    assert hits("same") == [True, True]


def test_max_age_keeps_young_runs():
    a, b, c = run_once("a"), run_once("b"), run_once("c")
    age_runs({a.id: 10 * 86400, b.id: 3 * 86400, c.id: 60})
    report = gc(max_age="7d")
    assert [r[0] for r in report.runs_removed] == [a.id]
    report = gc(max_age=parse_age("1h"))
    assert [r[0] for r in report.runs_removed] == [b.id]
    assert list(runs()["id"]) == [c.id]


def test_keep_last_and_max_age_together_keep_either():
    a, b, c = run_once("a"), run_once("b"), run_once("c")
    age_runs({a.id: 10 * 86400, b.id: 5 * 86400, c.id: 4 * 86400})
    report = gc(keep_last=1, max_age="6d")
    assert [r[0] for r in report.runs_removed] == [a.id]


def test_max_bytes_drops_oldest_runs_until_the_results_fit():
    a, b, c = run_once("a"), run_once("b"), run_once("c")
    age_runs({a.id: 300, b.id: 200, c.id: 100})
    report = gc(max_bytes="120kB")
    assert [r[0] for r in report.runs_removed] == [a.id]
    assert report.kept_bytes <= 120_000
    report = gc(max_bytes=1)  # the newest run is always kept
    assert [r[0] for r in report.runs_removed] == [b.id]
    assert list(runs()["id"]) == [c.id]


def test_orphan_and_temporary_files_go_after_the_grace_period():
    run_once("a")
    store = get_store()
    (some,) = files()
    stray = store.blobs.path(some).parent / ".tmp-leftover"
    stray.write_bytes(b"half")
    orphan = store.blobs.path("x" + "0" * 32)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"no row")
    assert gc().orphan_files_removed == 0  # too young
    report = gc(grace=0)
    assert report.orphan_files_removed == 2 and report.runs_removed == []
    assert not stray.exists() and not orphan.exists()
    assert hits("a") == [True, True]


def test_parse_age():
    assert parse_age("7d") == 7 * 86400 and parse_age("12h") == 43200 and parse_age("30m") == 1800
    assert parse_age("90s") == 90 and parse_age(5) == 5 and parse_age("2w") == 14 * 86400
    with pytest.raises(ValueError):
        parse_age("soon")


def test_cli_runs_and_gc(capsys):
    a, b = run_once("a"), run_once("b")
    age_runs({a.id: 200, b.id: 100})
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert a.id in out and b.id in out and "completed" in out
    assert out.splitlines()[0].startswith("store: ") and out.index(b.id) < out.index(a.id)  # newest first
    assert main(["runs", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in records] == [b.id, a.id]
    assert main(["gc", "--keep-last", "1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 1 run(s)" in out and a.id in out
    assert len(runs()) == 2
    assert main(["gc", "--keep-last", "1", "--max-age", "1d", "--max-bytes", "10GB"]) == 0
    assert "removed 0 run(s)" in capsys.readouterr().out  # a is younger than a day
    assert main(["gc", "--keep-last", "1"]) == 0
    assert "removed 1 run(s)" in capsys.readouterr().out
    assert main(["gc", "--max-age", "soon"]) == 2
    assert "cannot read 'soon' as an age" in capsys.readouterr().err


def test_the_nbflow_command_is_installed(tmp_path):
    run_once("a")
    env = dict(os.environ)
    exe = Path(sys.executable).with_name("nbflow")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "nbflow.cli"]
    out = subprocess.run([*cmd, "runs"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ret" in out.stdout
    (tmp_path / "f").write_text("not a directory")
    bad = subprocess.run([*cmd, "gc", "--home", str(tmp_path / "f")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1 and "no usable nbflow store" in bad.stderr


def test_max_age_removes_old_batch_kernel_logs_and_keeps_young_ones():
    run_once("k")  # a store
    logs = get_store().home / "batches"
    logs.mkdir()
    old, young = logs / "b-old.kernel.log", logs / "b-young.kernel.log"
    for p in (old, young):
        p.write_text("ipykernel said something\n")
    past = time.time() - 3 * 86400
    os.utime(old, (past, past))
    preview = gc(max_age="1d", dry_run=True)
    assert preview.kernel_logs_removed == 1 and old.exists()
    assert "would remove 1 batch kernel log(s)" in str(preview)
    assert gc(keep_last=0).kernel_logs_removed == 0 and old.exists()  # no max_age: kept
    assert gc(max_age="1d").kernel_logs_removed == 1
    assert not old.exists() and young.exists()


def test_max_age_keeps_the_kernel_log_of_a_batch_still_running():
    """A long batch whose kernel has been quiet: its log is old, but its kernel still writes
    there (and the batch shows its last lines if it dies), so it is kept as the batch's
    runs are (rule 1) until the batch ends; a batch that ended loses its old log."""
    from nbflow.batch import records
    from nbflow.batch.runner import kernel_log_path

    run_once("k2")  # a store
    store = get_store()
    for batch in ("b-running", "b-ended"):
        records.start_batch(store, batch, kind="run", notebook="nb.ipynb", output=None,
                            parameters={}, options={})  # (this process: alive)
    records.finish_batch(store, "b-ended", "completed", time.time())
    past = time.time() - 3 * 86400
    running, ended = kernel_log_path(store.home, "b-running"), kernel_log_path(store.home, "b-ended")
    running.parent.mkdir(exist_ok=True)
    for p in (running, ended):
        p.write_text("")  # (empty: what a quiet kernel has written so far)
        os.utime(p, (past, past))
    assert gc(max_age="1d").kernel_logs_removed == 1
    assert running.exists() and not ended.exists()
