"""Damaged stored results: detected on read, reported naming the task, recomputed.

Results are flipped in place, both kinds: a file in ``blobs/`` and a small result living
inline in SQLite.  The default reaction is a warning and a recomputation (other tasks'
results are unaffected); ``strict=True`` fails the run with ``StoreIntegrityError``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

import nbflow as nf
from nbflow.store import NbflowStoreWarning, StoreIntegrityError, get_store


@nf.task
def make_array(n):
    return np.arange(n, dtype="float64")


@nf.task
def small(x):
    return {"x": x, "label": "tiny"}


@nf.task
def combine(a, s):
    return float(a.sum()) + s["x"]


def build():
    with nf.Workflow("corrupt") as wf:
        a = make_array(50_000)  # 400 kB: a file
        s = small(3)  # a few bytes: inline
        c = combine(a, s)
    return wf, a, s, c


def stored(key: str) -> tuple[str, int]:
    """(blob name, size) of the stored result of task ``key`` in the latest run."""
    db = sqlite3.connect(get_store().journal.path)
    try:
        blob, size = db.execute(
            "SELECT t.blob, b.size FROM task_runs t JOIN blobs b ON b.key = t.blob "
            "WHERE t.key = ? ORDER BY t.end DESC LIMIT 1", (key,)).fetchone()
    finally:
        db.close()
    return blob, size


def flip_file(blob: str) -> Path:
    path = get_store().blobs.path(blob)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def flip_inline(blob: str) -> None:
    db = sqlite3.connect(get_store().journal.path)
    try:
        (data,) = db.execute("SELECT inline FROM blobs WHERE key = ?", (blob,)).fetchone()
        data = bytearray(data)
        data[-3] ^= 0x01
        db.execute("UPDATE blobs SET inline = ? WHERE key = ?", (bytes(data), blob))
        db.commit()
    finally:
        db.close()


def test_flipped_bytes_are_detected_reported_and_recomputed():
    wf, _, _, c = build()
    first = wf.run()
    expected = first[c]
    big_blob, big_size = stored("make_array-0")
    small_blob, small_size = stored("small-0")
    assert big_size > 32 * 1024 and get_store().blobs.path(big_blob).exists()
    assert small_size < 1024 and not get_store().blobs.path(small_blob).exists()
    flip_file(big_blob)
    flip_inline(small_blob)

    wf, a, _, c = build()
    with pytest.warns(NbflowStoreWarning) as caught:
        run = wf.run()
    messages = " | ".join(str(w.message) for w in caught)
    assert "task 'make_array-0'" in messages and "task 'small-0'" in messages
    assert "failed its checksum" in messages
    df = run.tasks.set_index("key")
    for key in ("make_array-0", "small-0"):
        assert not bool(df.loc[key, "cached"])
        assert df.loc[key, "reason"] == "stored result corrupt (checksum mismatch)"
    assert bool(df.loc["combine-0", "cached"])  # its own result was fine, and its inputs are the same
    assert run[c] == expected
    np.testing.assert_array_equal(run[a], np.arange(50_000, dtype="float64"))

    wf, a, _s, c = build()  # repaired: everything hits again, silently
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", NbflowStoreWarning)
        again = wf.run()
    assert all(again.tasks["cached"])


def test_strict_raises_instead_of_recomputing():
    wf, *_ = build()
    wf.run()
    flip_file(stored("make_array-0")[0])
    wf, *_ = build()
    with pytest.raises(StoreIntegrityError, match=r"make_array-0.*failed its checksum"):
        wf.run(strict=True)
    run = nf.last_run()
    assert run.status == "failed"
    assert "make_array-0" not in set(run.tasks.loc[run.tasks["state"] == "completed", "key"])


def test_missing_result_file_is_a_plain_miss():
    wf, *_ = build()
    wf.run()
    get_store().blobs.path(stored("make_array-0")[0]).unlink()
    wf, *_ = build()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", NbflowStoreWarning)
        run = wf.run()
    df = run.tasks.set_index("key")
    assert df.loc["make_array-0", "reason"] == "stored result is missing (removed by gc or by hand)"
    assert bool(df.loc["combine-0", "cached"])
