"""The fit and scoring helper processes are deaf to interrupts from their first moments.

jupyter_client interrupts the kernel's whole process group at every kernel shutdown (and a
cell's interrupt does too).  A helper started a moment before (a live ETA's fit at the end of
a short notebook) used to be still importing nbflow for its initializer, with Python's own
Ctrl-C handler in place: it died printing a KeyboardInterrupt traceback.  Its initializer is
now the standard library's ``signal.signal``, which imports nothing of nbflow; the lower
priority comes with its first job.
"""

from __future__ import annotations

import os
import pickle
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from nbflow.predict import eta_scores, fitting


def test_the_helpers_initializer_needs_nothing_of_nbflow(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []

    def recording(**kw: Any) -> dict[str, Any]:
        made.append(kw)
        return kw

    monkeypatch.setattr(fitting, "ProcessPoolExecutor", recording)
    fitting.helper_pool()
    (kw,) = made
    assert kw["initializer"] is signal.signal and kw["initargs"] == (signal.SIGINT, signal.SIG_IGN)
    assert b"nbflow" not in pickle.dumps((kw["initializer"], kw["initargs"]))
    assert kw["max_workers"] == 1 and kw["mp_context"].get_start_method() == "spawn"


def test_the_helper_ignores_an_interrupt_and_is_niced_once() -> None:
    pool: ProcessPoolExecutor = fitting.helper_pool()
    try:
        assert pool.submit(signal.getsignal, signal.SIGINT).result(timeout=120) == signal.SIG_IGN
        pid = pool.submit(os.getpid).result(timeout=60)
        os.kill(pid, signal.SIGINT)  # what interrupting the kernel's process group does
        assert pool.submit(os.getpid).result(timeout=60) == pid  # the same helper, alive
        mine = os.nice(0)
        assert pool.submit(os.nice, 0).result(timeout=60) == mine  # not niced before a job
        pool.submit(fitting._background_priority).result(timeout=60)
        pool.submit(fitting._background_priority).result(timeout=60)  # (a second job: no more)
        assert pool.submit(os.nice, 0).result(timeout=60) == min(mine + fitting.FIT_NICE, 19)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_the_jobs_never_nice_the_kernel_itself() -> None:
    mine = os.nice(0)
    fitting._background_priority()  # (a job run in this process, as a test might)
    eta_scores._background_priority()
    assert os.nice(0) == mine


def test_the_scoring_helper_is_niced_below_the_fit_helper() -> None:
    pool: ProcessPoolExecutor = fitting.helper_pool()
    try:
        mine = os.nice(0)
        pool.submit(eta_scores._background_priority).result(timeout=120)
        pool.submit(eta_scores._background_priority).result(timeout=60)
        assert pool.submit(os.nice, 0).result(timeout=60) == min(mine + eta_scores.SCORE_NICE, 19)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
