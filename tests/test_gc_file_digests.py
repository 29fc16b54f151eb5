"""``nbflow gc`` prunes the ``nf.File`` digest memo (the ``file_digests`` table).

A row whose file is gone, or whose size / mtime / inode no longer match, can never be used
again and goes at every gc; a row not used for ``file_digest_age`` goes too (default:
``max_age`` if given, else 30 days; ``"never"`` keeps them).  Using
a row refreshes its ``seen`` time.  The count is in gc's report and its printed output.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import nbflow as nf
from nbflow.cli import main
from nbflow.store import gc, get_store
from nbflow.store.filememo import FileMemo


@nf.task
def size_of(f):
    with open(f, "rb") as fh:
        return len(fh.read())


def _run(paths: list[Path]) -> None:
    with nf.Workflow("digests") as wf:
        for p in paths:
            size_of(nf.File(str(p)))
    wf.run()


def _rows() -> dict[str, float | None]:
    get_store().journal.flush()
    db = sqlite3.connect(get_store().journal.path)
    try:
        return dict(db.execute("SELECT path, seen FROM file_digests").fetchall())
    finally:
        db.close()


def _set_seen(path: Path, seen: float) -> None:
    get_store().journal.flush()
    db = sqlite3.connect(get_store().journal.path)
    try:
        db.execute("UPDATE file_digests SET seen = ? WHERE path = ?", (seen, str(path.resolve())))
        db.commit()
    finally:
        db.close()


def _files(tmp_path: Path) -> list[Path]:
    out = []
    for name in ("gone.txt", "changed.txt", "same.txt"):
        p = tmp_path / name
        p.write_text(f"content of {name}\n")
        out.append(p)
    return out


def test_gc_prunes_digests_of_files_gone_or_changed(tmp_path: Path) -> None:
    gone, changed, same = _files(tmp_path)
    _run([gone, changed, same])
    assert set(_rows()) == {str(p.resolve()) for p in (gone, changed, same)}
    gone.unlink()
    changed.write_text("a longer, different content\n")

    dry = gc(dry_run=True)
    assert dry.file_digests_removed == 2
    assert len(_rows()) == 3  # a dry run removes nothing
    report = gc()
    assert report.file_digests_removed == 2
    assert set(_rows()) == {str(same.resolve())}
    assert "removed 2 file digest(s)" in str(report)
    assert gc().file_digests_removed == 0  # nothing left to prune


def test_gc_max_age_prunes_digests_not_used_for_that_long(tmp_path: Path) -> None:
    old, fresh, _ = _files(tmp_path)
    _run([old, fresh])
    _set_seen(old, time.time() - 10 * 86400)
    assert gc(max_age="30d").file_digests_removed == 0
    assert gc(keep_last=5).file_digests_removed == 0  # no age given: 30 days, 10 is fine
    assert gc(max_age="7d").file_digests_removed == 1
    assert set(_rows()) == {str(fresh.resolve())}


def test_using_a_digest_refreshes_its_seen_time(tmp_path: Path) -> None:
    (path, *_) = _files(tmp_path)
    _run([path])
    key = str(path.resolve())
    long_ago = time.time() - 10 * 86400
    _set_seen(path, long_ago)
    st = os.stat(path)
    memo = FileMemo(get_store())
    try:
        assert memo.get(key, (st.st_size, st.st_mtime_ns, st.st_ino)) is not None
    finally:
        memo.close()
    seen = _rows()[key]
    assert seen is not None and seen > long_ago + 9 * 86400
    assert gc(max_age="7d").file_digests_removed == 0  # used just now: kept


def test_nbflow_gc_prints_the_count(tmp_path: Path, capsys) -> None:
    gone, _, _ = _files(tmp_path)
    _run([gone])
    gone.unlink()
    assert main(["gc", "--dry-run"]) == 0
    assert "would remove 1 file digest(s)" in capsys.readouterr().out
    assert main(["gc"]) == 0
    assert "removed 1 file digest(s)" in capsys.readouterr().out
    assert _rows() == {}


def test_by_default_gc_drops_digests_unused_for_30_days(tmp_path: Path, capsys) -> None:
    month, fortnight, fresh = _files(tmp_path)
    _run([month, fortnight, fresh])
    _set_seen(month, time.time() - 31 * 86400)
    _set_seen(fortnight, time.time() - 15 * 86400)
    assert gc(file_digest_age="never").file_digests_removed == 0  # kept on request
    assert gc(max_age="60d").file_digests_removed == 0  # --max-age decides when given
    assert main(["gc", "--dry-run"]) == 0  # no option at all: 30 days
    assert "would remove 1 file digest(s) of nf.File inputs (file gone or changed, or unused for 30d)" \
        in capsys.readouterr().out
    assert len(_rows()) == 3
    assert main(["gc", "--file-digest-age", "14d"]) == 0  # the option wins over the default
    assert "removed 2 file digest(s)" in capsys.readouterr().out
    assert set(_rows()) == {str(fresh.resolve())}


def test_file_digest_age_takes_ages_and_never_and_refuses_the_rest(tmp_path: Path, capsys) -> None:
    _run(_files(tmp_path)[:1])  # (a store to collect in)
    assert gc(file_digest_age="never").file_digest_age is None
    assert gc(file_digest_age="12h").file_digest_age == 12 * 3600
    assert gc(max_age="2d").file_digest_age == 2 * 86400
    assert gc().file_digest_age == 30 * 86400
    assert "(file gone or changed)" in str(gc(file_digest_age="never"))
    assert main(["gc", "--file-digest-age", "soon"]) == 2
    assert "cannot read 'soon' as an age" in capsys.readouterr().err


def test_gc_help_says_the_default() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "nbflow.cli", "gc", "--help"], capture_output=True,
                         text=True, timeout=120).stdout
    text = " ".join(out.split())
    assert "--file-digest-age AGE" in text and "else 30d; 'never' keeps them" in text


def test_gc_of_a_store_that_does_not_exist_says_so_and_makes_none(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "typo" / ".nbflow"
    assert main(["gc", "--home", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"no usable nbflow store at {missing} (no journal there, so nothing to collect)" in err
    assert "--home" in err
    assert not missing.exists()  # a mistyped --home made no new store
