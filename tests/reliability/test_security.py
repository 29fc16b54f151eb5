"""The store cannot be turned against its user.

Each test plays an attacker who can write the store (not the user's key file): a result
replaced by a pickle that would run a "command" (here: create a marker file), a journal
row naming a file outside the store, a symlinked result directory, loose permissions.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest

import nbflow as nf
from nbflow.store import get_store, hashing, serialize, signing, store_home
from nbflow.store.cache import StoreIntegrityError

from .helpers import store_warnings

pytestmark = pytest.mark.timeout(120)


class _Payload:
    """Unpickling this creates ``self.path`` (stands in for running any command)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@nf.task
def small(n: int) -> dict:
    return {"n": n, "items": list(range(n))}


@nf.task
def big(n: int) -> np.ndarray:
    return np.arange(n, dtype="int64")


def _run_small():
    with nf.Workflow("victim") as wf:
        r = small(5)
    return wf, r


def _db() -> sqlite3.Connection:
    get_store().journal.flush()
    return sqlite3.connect(store_home() / "journal.sqlite", isolation_level=None)


def _forge(fmt_version: int, payload: bytes) -> bytes:
    if fmt_version == 1:  # the old unsigned format
        return b"NBF" + bytes((1, ord("P"))) + payload
    return b"NBF" + bytes((2, ord("P"))) + os.urandom(32) + payload  # a guessed signature


def _point_row_at(data: bytes) -> None:
    """Store ``data`` as the victim task's result, with consistent checksums (as an
    attacker who knows the format can)."""
    name = hashing.digest(data)
    db = _db()
    try:
        (old,) = db.execute("SELECT blob FROM cache").fetchone()
        db.execute("INSERT INTO blobs(key, size, inline, created) VALUES(?,?,?,0)", (name, len(data), data))
        db.execute("UPDATE cache SET blob = ? WHERE blob = ?", (name, old))
        db.execute("UPDATE task_runs SET blob = ? WHERE blob = ?", (name, old))
    finally:
        db.close()


@pytest.mark.parametrize("version", [1, 2])
def test_tampered_pickle_never_runs(tmp_path, version):
    marker = tmp_path / "pwned"
    wf, _r = _run_small()
    first = wf.run()
    _point_row_at(_forge(version, pickle.dumps(_Payload(str(marker)))))
    wf2, r2 = _run_small()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        run = wf2.run()
    assert not marker.exists()
    assert run[r2] == {"n": 5, "items": [0, 1, 2, 3, 4]}
    assert not run.tasks["cached"].any()  # recomputed, not served
    with pytest.raises(nf.TaskNotFinished):
        nf.load_run(first.id)["small-0"]
    assert not marker.exists()


def test_forged_signature_warns_and_strict_raises(tmp_path):
    marker = tmp_path / "pwned"
    wf, _ = _run_small()
    wf.run()
    _point_row_at(_forge(2, pickle.dumps(_Payload(str(marker)))))
    wf2, _ = _run_small()
    with pytest.raises(StoreIntegrityError, match="signature"):
        wf2.run(strict=True)
    assert not marker.exists()
    _run_small()[0].run()  # (strict stopped before storing anything: store it again)
    _point_row_at(_forge(2, pickle.dumps(_Payload(str(marker)))))
    wf3, _ = _run_small()
    with pytest.warns(nf.NbflowStoreWarning, match="bad signature.*recomputed"):
        wf3.run()
    assert not marker.exists()


def test_row_pointed_at_another_signed_result_is_refused():
    """Every result is signed, but a row may not be re-pointed at a different one."""
    with nf.Workflow("two") as wf:
        a = small(3)
        b = small(4)
    wf.run()
    db = _db()
    try:
        rows = db.execute("SELECT key, blob FROM cache ORDER BY created").fetchall()
        (k1, _b1), (_k2, b2) = rows[0], rows[1]
        db.execute("UPDATE cache SET blob = ? WHERE key = ?", (b2, k1))
    finally:
        db.close()
    with nf.Workflow("two") as wf2:
        a = small(3)
        b = small(4)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        run = wf2.run()
    assert run[a] == {"n": 3, "items": [0, 1, 2]} and run[b] == {"n": 4, "items": [0, 1, 2, 3]}
    assert any("signature" in m for m in store_warnings(rec))


def test_tampered_big_result_file_is_not_loaded(tmp_path):
    marker = tmp_path / "pwned"
    with nf.Workflow("bigv") as wf:
        r = big(20_000)
    wf.run()
    forged = _forge(2, pickle.dumps(_Payload(str(marker))) + b"\0" * 40_000)
    name = hashing.digest(forged)
    store = get_store()
    store.blobs.write(name, forged)
    db = _db()
    try:
        (_old,) = db.execute("SELECT blob FROM cache").fetchone()
        db.execute("INSERT INTO blobs(key, size, inline, created) VALUES(?,?,NULL,0)", (name, len(forged)))
        db.execute("UPDATE cache SET blob = ?", (name,))
    finally:
        db.close()
    with nf.Workflow("bigv") as wf2:
        r = big(20_000)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        run = wf2.run()
    assert not marker.exists()
    assert (run[r] == np.arange(20_000)).all()


def test_signed_results_round_trip_and_other_keys_fail(tmp_path, monkeypatch):
    data = serialize.dumps({"a": 1})
    assert serialize.loads(data) == {"a": 1}
    monkeypatch.setenv("NBFLOW_KEY_FILE", str(tmp_path / "other-key"))
    with pytest.raises(serialize.BadSignature):
        serialize.loads(data)


@pytest.mark.parametrize("crafted", ["../../../victim", "/ABS", "x" + "0" * 31 + "/..", "x12/../../victim"])
def test_crafted_blob_row_cannot_delete_outside_the_store(tmp_path, crafted):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    wf, _r = _run_small()
    wf.run()
    home = store_home()
    crafted = crafted.replace("/ABS", str(victim))
    crafted = crafted.replace("../../../victim", os.path.relpath(victim, home / "blobs" / "xxx"))
    db = _db()
    try:
        db.execute("INSERT INTO blobs(key, size, inline, created) VALUES(?,?,NULL,0)", (crafted, 8))
        db.execute("UPDATE cache SET blob = ?", (crafted,))
        db.execute("UPDATE task_runs SET blob = ?", (crafted,))
    finally:
        db.close()
    wf2, r2 = _run_small()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert wf2.run()[r2]["n"] == 5  # the "forget a corrupt result" path ran
    assert victim.read_text() == "precious"
    # and gc, removing every run's results
    db = _db()
    try:
        db.execute("INSERT OR IGNORE INTO blobs(key, size, inline, created) VALUES(?,?,NULL,0)", (crafted, 8))
        db.execute("DELETE FROM task_runs")
    finally:
        db.close()
    get_store().forget_pending()
    nf.gc(keep_last=0, grace=0)
    assert victim.read_text() == "precious"


def test_gc_does_not_follow_a_symlinked_blob_directory(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    kept = outside / ("0" * 30)
    kept.write_text("not nbflow's")
    wf, _ = _run_small()
    wf.run()
    blobs = store_home() / "blobs"
    blobs.mkdir(exist_ok=True)
    os.symlink(outside, blobs / "x00")
    report = nf.gc(keep_last=0, grace=0)
    assert kept.read_text() == "not nbflow's"
    assert report.orphan_files_removed == 0


def test_blob_keys_are_validated_before_any_path_is_made():
    store = get_store() or (_run_small()[0].run() and get_store())
    for bad in ["../x", "/etc/passwd", "x" * 33, "", "X" + "0" * 32, "x" + "g" * 32]:
        with pytest.raises(nf.store.blobs.BadBlobKey):
            store.blobs.path(bad)
        assert store.blobs.delete(bad) == 0


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_new_store_files_and_key_are_private():
    with nf.Workflow("private") as wf:
        big(20_000)
        small(2)
    wf.run()
    home = store_home()
    assert _mode(home) == 0o700
    assert _mode(home / "journal.sqlite") == 0o600
    for extra in ("journal.sqlite-wal", "journal.sqlite-shm"):
        if (home / extra).exists():
            assert _mode(home / extra) & 0o077 == 0
    files = [p for p in (home / "blobs").rglob("*") if p.is_file()]
    assert files and all(_mode(p) == 0o600 for p in files)
    assert all(_mode(p) == 0o700 for p in (home / "blobs").rglob("*") if p.is_dir())
    assert _mode(signing.key_path()) == 0o600


def test_existing_loose_store_warns_once(tmp_path):
    home = tmp_path / "shared"
    home.mkdir()
    os.chmod(home, 0o777)
    with pytest.warns(nf.NbflowStoreWarning, match="accessible to other users"):
        get_store(home)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_store(home)  # once per process


def test_a_key_readable_by_others_is_refused(monkeypatch, tmp_path):
    key = tmp_path / "loosekey"
    key.write_bytes(os.urandom(32))
    os.chmod(key, 0o644)
    monkeypatch.setenv("NBFLOW_KEY_FILE", str(key))
    wf, r = _run_small()
    with pytest.warns(nf.NbflowStoreWarning, match="chmod 600"):
        run = wf.run()
    assert run[r]["n"] == 5


def test_verified_content_is_remembered_but_nothing_else():
    """A result verified once verifies again from memory; one changed byte is checked in
    full (and fails); another key starts from nothing."""
    data = serialize.dumps({"k": [1, 2, 3]})
    head, sig, payload = data[:5], data[5:37], data[37:]
    assert signing.check(sig, head, payload)
    calls = []
    real = signing.mac
    try:
        signing.mac = lambda *p: calls.append(p) or real(*p)
        assert signing.check(sig, head, payload)  # remembered: no MAC computed
        assert not calls
        tampered = payload[:-1] + bytes([payload[-1] ^ 1])
        assert not signing.check(sig, head, tampered)
        assert calls  # computed in full
    finally:
        signing.mac = real
    assert signing.row_ok(signing.row_sig("ck", "x" + "0" * 32, "v"), "ck", "x" + "0" * 32, "v")
    assert not signing.row_ok(signing.row_sig("ck", "x" + "0" * 32, "v"), "ck", "x" + "1" * 32, "v")


def test_a_key_being_made_is_never_seen_half_written(monkeypatch, tmp_path):
    """Two processes making the key at once (the notebook and a Dask worker on a first run):
    whichever looks while the other writes sees no key or the whole key, never an empty
    file it would call damaged, and both end up signing with the same key."""
    path = tmp_path / "cfg" / "key"
    seen: list[bytes] = []
    write = os.write

    def write_while_another_process_looks(fd: int, data: bytes) -> int:
        if not seen:  # (the other process, once: it makes the key too if there is none)
            seen.append(b"")
            signing._create(path)
            seen[0] = signing._read(path)
        return write(fd, data)

    monkeypatch.setattr(signing.os, "write", write_while_another_process_looks)
    signing._create(path)
    monkeypatch.setattr(signing.os, "write", write)
    assert len(seen[0]) == signing.KEY_BYTES
    assert signing._read(path) == seen[0]  # the first one linked in place stands
    assert _mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["key"]  # no temporary file left
