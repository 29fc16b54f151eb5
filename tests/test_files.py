"""nf.File and file reads/writes: a task's cache key follows the content of the files it
reads, and a cached result is used only while the files it wrote are as it left them."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import nbflow as nf
from nbflow.store import hashing


@nf.task
def rows(path: os.PathLike) -> int:
    return len(pd.read_csv(path))


@nf.task
def rows_by_str(path: str) -> int:
    return len(pd.read_csv(path))


def _csv(path: Path, n: int) -> None:
    pd.DataFrame({"x": range(n)}).to_csv(path, index=False)


def _cached(run: nf.Run, key: str) -> bool:
    return bool(run.tasks.set_index("key").loc[key, "cached"])


def test_a_rewritten_file_reruns_the_task_and_explain_names_it(tmp_path: Path) -> None:
    data = tmp_path / "sales.csv"
    _csv(data, 3)
    with nf.Workflow("file") as wf:
        n = rows(nf.File(data))
    assert wf.run()[n] == 3
    again = wf.run()
    assert _cached(again, "rows-0") and again[n] == 3
    _csv(data, 5)  # same path, new content
    third = wf.run()
    assert third[n] == 5 and not _cached(third, "rows-0")
    assert str(data) in third.tasks.set_index("key").loc["rows-0", "reason"]
    assert str(data) in str(third.explain(n))


def test_a_plain_string_path_is_flagged_by_check(tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    _csv(data, 2)
    with nf.Workflow("untracked") as wf:
        rows_by_str(str(data))
        rows(nf.File(data))
    found = nf.check(wf).by_code("untracked-file")
    assert [f.tasks for f in found] == [("rows_by_str-0",)]
    assert "nf.File" in found[0].message and found[0].severity == "info"


def test_file_is_a_pathlike(tmp_path: Path) -> None:
    f = nf.File(tmp_path / "x.txt")
    Path(f).write_text("hi")
    with open(f) as fh:
        assert fh.read() == "hi"
    assert os.fspath(f) == str(tmp_path / "x.txt")
    assert nf.File(f) == f and repr(f).startswith("nf.File(")


def test_directories_and_globs_hash_their_files(tmp_path: Path) -> None:
    d = tmp_path / "parts"
    d.mkdir()
    (d / "a.csv").write_text("x\n1\n")
    (d / "b.csv").write_text("x\n2\n")
    by_dir = hashing.value_hash(nf.File(d))
    by_glob = hashing.value_hash(nf.File(str(d / "*.csv")))
    (d / "b.csv").write_text("x\n3\n")
    assert hashing.value_hash(nf.File(d)) != by_dir
    assert hashing.value_hash(nf.File(str(d / "*.csv"))) != by_glob
    (d / "c.txt").write_text("not matched")
    assert hashing.value_hash(nf.File(str(d / "*.csv"))) == hashing.value_hash(nf.File(str(d / "*.csv")))


def test_an_untouched_file_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "big.bin"
    data.write_bytes(b"0" * 100_000)
    first = hashing.value_hash(nf.File(data))
    reads = []
    real = hashing.FILES._digest_file
    monkeypatch.setattr(hashing.FILES, "_digest_file", lambda p: reads.append(p) or real(p))
    assert hashing.value_hash(nf.File(data)) == first
    assert reads == []  # same size, mtime and inode: the digest is reused
    data.write_bytes(b"1" * 100_000)
    assert hashing.value_hash(nf.File(data)) != first and reads == [data]


def test_reads_entries_that_name_files_enter_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "in.csv", 2)

    @nf.task(reads=("in.csv", "db:other"))
    def count() -> int:
        return len(pd.read_csv("in.csv"))

    with nf.Workflow("reads") as wf:
        c = count()
    assert wf.run()[c] == 2
    assert _cached(wf.run(), "count-0")
    _csv(tmp_path / "in.csv", 4)
    run = wf.run()
    assert run[c] == 4 and "reads in.csv" in run.tasks.set_index("key").loc["count-0", "reason"]


def test_products_missing_or_changed_rerun_the_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "calls.log"  # (counted on disk: a closure over a list would be part of the code)

    @nf.task(writes=("out.csv", "db:audit"))
    def export(n: int) -> str:
        with open(log, "a") as fh:
            fh.write("x")
        _csv(tmp_path / "out.csv", n)
        return "out.csv"

    class Calls:
        def __len__(self) -> int:
            return len(log.read_text()) if log.exists() else 0

    calls = Calls()

    with nf.Workflow("products") as wf:
        export(3)
    wf.run()
    run = wf.run()
    assert _cached(run, "export-0") and len(calls) == 1
    (tmp_path / "out.csv").unlink()
    run = wf.run()
    assert not _cached(run, "export-0") and len(calls) == 2
    assert "product out.csv is missing" in run.tasks.set_index("key").loc["export-0", "reason"]
    (tmp_path / "out.csv").write_text("edited by hand\n")
    run = wf.run()
    assert len(calls) == 3
    assert "changed since the task wrote it" in run.tasks.set_index("key").loc["export-0", "reason"]
    assert _cached(wf.run(), "export-0") and len(calls) == 3
