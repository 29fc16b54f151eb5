"""run.prediction_report(): predicted vs actual, and the unusually slow calls."""

from __future__ import annotations

import time

from history_edits import set_durations

import nbflow as nf


@nf.task
def work(seconds: float, i: int) -> int:
    time.sleep(seconds)
    return i


def _run(slow_one: bool):
    with nf.Workflow("report") as wf:
        for i in range(12):
            work(0.6 if slow_one and i == 5 else 0.02, i)
    return wf.run(workers=4, cache=False)


def test_report_flags_the_task_that_was_unusually_slow() -> None:
    first = _run(False)
    assert "no history" in str(first.prediction_report())
    for _ in range(2):
        _run(False)
    set_durations(0.02)  # what history says, not what a busy machine measured
    run = _run(True)  # work-5 sleeps 0.6 s: at least 30 times what history says
    rep = run.prediction_report()
    # An 80% band leaves about one call in ten above it by chance; the 30x slower one is
    # always among them.
    slow = rep.unusually_slow.set_index("key")
    assert "work-5" in slow.index
    assert slow.loc["work-5", "actual_s"] > 10 * slow.loc["work-5", "predicted_s"]
    fam = rep.families.set_index("task").loc["work"]
    assert fam["n"] == 12 and fam["slow"] == len(slow)
    assert 0.01 < fam["predicted_median_s"] < 0.1
    assert "work-5 (" in str(rep)
    assert "prediction report" in rep._repr_html_()


def test_report_of_a_fully_cached_run_says_so() -> None:
    with nf.Workflow("cached-report") as wf:
        work(0.01, 1)
    wf.run()
    again = wf.run()
    assert "no task ran" in str(again.prediction_report())
