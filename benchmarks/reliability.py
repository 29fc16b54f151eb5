"""Reliability figures: the cost of signing stored results, and how fast a held lock is noticed.

    .venv/bin/python benchmarks/reliability.py [--json benchmarks/reliability.json] [--quick]

* ``signing_rerun``: a 10,000-task workflow (independent small tasks plus a fan-in every
  100) run once to fill a store, then re-run fully cached -- every result's cache row and
  bytes are verified (HMAC-SHA256) before loading.  ``signed`` re-runs in the same process
  (content verified before is remembered), ``signed_fresh`` checks every signature in full
  (what a new kernel does).  The baseline is the same re-run with the
  MAC replaced by a constant (no signing work at all), each mode with its own store, the
  two alternated round-robin; the ratio of medians is reported (target <= 1.03).
* ``signing_1gib``: one task returning a 1 GiB numpy array, run with caching on into a
  fresh store (hash, serialise, sign, write, fsync), signed against unsigned; and the
  cached re-read of it (read, checksum, verify, decode).  Target <= 1.01.
* ``held_lock``: another connection holds the journal's write lock while this process
  commits a run's rows: seconds until the log says it is waiting (``NBFLOW_LOCK_NOTICE``,
  default 3), and until it gives up and reports the lock (``NBFLOW_LOCK_TIMEOUT``, set to
  10 here so the benchmark stays short; the default is 30).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nbflow as nf
from nbflow.store import get_store, signing

ZERO = bytes(32)
BIG: np.ndarray | None = None


@nf.task
def small(i: int) -> int:
    return i * 3


@nf.task
def gather(*xs: int) -> int:
    return sum(xs)


@nf.task
def one_gib() -> np.ndarray:
    return BIG  # type: ignore[return-value]


class Unsigned:
    """Within the block, the MAC is a constant: the baseline without signing work."""

    def __enter__(self) -> None:
        self.real = signing.mac
        signing.mac = lambda *parts: ZERO  # type: ignore[assignment]
        # (what was verified in one mode means nothing in the other: keep them apart)
        self.saved = {k: set(v) for k, v in signing._MEMO.items()}
        signing._MEMO.clear()

    def __exit__(self, *exc: Any) -> None:
        signing.mac = self.real  # type: ignore[assignment]
        signing._MEMO.clear()
        signing._MEMO.update(self.saved)


class Signed:
    """Signed, as in a kernel that re-runs a workflow it ran before (verified content is
    remembered per process)."""

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: Any) -> None:
        pass


class SignedFresh(Signed):
    """Signed, every signature checked in full (a new process re-running the workflow)."""

    def __enter__(self) -> None:
        signing._MEMO.clear()


def _home(path: str) -> None:
    os.environ["NBFLOW_HOME"] = path


def build_10k(n: int) -> nf.Workflow:
    with nf.Workflow("rerun") as wf:
        parts = [small(i) for i in range(n - n // 100)]
        for k in range(n // 100):
            gather(*parts[k * 99:(k + 1) * 99])
    assert len(wf) == n
    return wf


CPU: dict[str, list[float]] = {}


def timed(fn: Any, label: str = "") -> float:
    """Wall seconds of ``fn()``; its CPU seconds (all threads of this process) go to CPU[label]:
    on a shared machine CPU time is the steadier measure of work done."""
    gc.collect()
    c0 = time.process_time()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    CPU.setdefault(label, []).append(time.process_time() - c0)
    return wall


def signing_rerun(n: int, samples: int, tmp: Path) -> dict[str, Any]:
    homes = {"signed": tmp / "rerun-signed", "signed_fresh": tmp / "rerun-signed",
             "unsigned": tmp / "rerun-unsigned"}
    modes = {"signed": Signed, "signed_fresh": SignedFresh, "unsigned": Unsigned}
    for name, home in homes.items():
        if name == "signed_fresh":
            continue  # (shares the signed store)
        _home(str(home))
        with modes[name]():
            build_10k(n).run()
    times: dict[str, list[float]] = {k: [] for k in homes}
    for _ in range(samples):
        for name, home in homes.items():
            _home(str(home))
            with modes[name]():
                def again() -> None:
                    run = build_10k(n).run()
                    assert bool(run.tasks["cached"].all())
                times[name].append(timed(again, f"rerun-{name}"))
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(CPU[f"rerun-{k}"]) for k in times}
    return {"tasks": n, "samples_s": times, "median_s": med,
            "ratio_signed_over_unsigned": med["signed"] / med["unsigned"],
            "ratio_signed_fresh_over_unsigned": med["signed_fresh"] / med["unsigned"],
            "cpu_median_s": cpu, "cpu_ratio": cpu["signed"] / cpu["unsigned"],
            "cpu_ratio_fresh": cpu["signed_fresh"] / cpu["unsigned"], "target": 1.03}


def signing_1gib(samples: int, tmp: Path, size: int) -> dict[str, Any]:
    global BIG
    BIG = np.arange(size // 8, dtype="int64")
    modes = {"signed": Signed, "unsigned": Unsigned}
    write: dict[str, list[float]] = {k: [] for k in modes}
    read: dict[str, list[float]] = {k: [] for k in modes}
    for s in range(samples):
        for name, mode in modes.items():
            home = tmp / f"gib-{name}-{s}"
            _home(str(home))
            with mode():
                def first() -> None:
                    with nf.Workflow("gib") as wf:
                        one_gib()
                    wf.run()

                def cached() -> None:
                    with nf.Workflow("gib") as wf:
                        r = one_gib()
                    run = wf.run()
                    assert bool(run.tasks["cached"].all()) and run[r].nbytes == size

                write[name].append(timed(first, f"write-{name}"))
                read[name].append(timed(cached, f"read-{name}"))
            store = get_store()
            store.journal.close()
            for p in (home / "blobs").rglob("*"):
                if p.is_file():
                    p.unlink()
    mw = {k: statistics.median(v) for k, v in write.items()}
    mr = {k: statistics.median(v) for k, v in read.items()}
    cw = {k: statistics.median(CPU[f"write-{k}"]) for k in modes}
    cr = {k: statistics.median(CPU[f"read-{k}"]) for k in modes}
    BIG = None
    return {"bytes": size, "write_samples_s": write, "read_samples_s": read, "write_median_s": mw,
            "read_median_s": mr, "write_ratio": mw["signed"] / mw["unsigned"],
            "read_ratio": mr["signed"] / mr["unsigned"], "cpu_write_median_s": cw, "cpu_read_median_s": cr,
            "cpu_write_ratio": cw["signed"] / cw["unsigned"], "cpu_read_ratio": cr["signed"] / cr["unsigned"],
            "target": 1.01}


class _Clock(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record.getMessage()))


def held_lock(tmp: Path) -> dict[str, Any]:
    home = tmp / "locked"
    _home(str(home))
    os.environ["NBFLOW_LOCK_TIMEOUT"] = "10"
    try:
        with nf.Workflow("lock") as wf:
            small(1)
        wf.run()
        store = get_store()
        store.journal.close()
        holder = sqlite3.connect(home / "journal.sqlite", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        clock = _Clock()
        log = logging.getLogger("nbflow.store")
        log.addHandler(clock)
        try:
            t0 = time.monotonic()
            with nf.Workflow("lock2") as wf2:
                small(2)
            wf2.run()
            t_end = time.monotonic()
        finally:
            log.removeHandler(clock)
            holder.rollback()
            holder.close()
    finally:
        del os.environ["NBFLOW_LOCK_TIMEOUT"]
    notice = next((t - t0 for t, m in clock.records if "waiting for the write lock" in m), None)
    gave_up = next((t - t0 for t, m in clock.records if "stayed locked" in m), None)
    return {"notice_after_s": notice, "gave_up_after_s": gave_up, "run_returned_after_s": t_end - t0,
            "lock_notice_setting_s": 3.0, "lock_timeout_setting_s": 10.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--quick", action="store_true", help="fewer samples, smaller data (a smoke test)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["NBFLOW_KEY_FILE"] = str(tmp / "key")
        out = {
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            "signing_rerun": signing_rerun(2000 if args.quick else 10_000, 2 if args.quick else 5, tmp),
            "signing_1gib": signing_1gib(1 if args.quick else 3, tmp, (64 if args.quick else 1024) * 2**20),
            "held_lock": held_lock(tmp),
        }
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
