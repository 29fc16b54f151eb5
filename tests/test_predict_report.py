"""run.prediction_report(): predicted vs actual, and the unusually slow calls."""

from __future__ import annotations

import time

import pandas as pd
from history_edits import set_durations

import nbflow as nf
from nbflow.predict.report import PredictionReport


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


def test_the_unusually_slow_say_how_far_above_their_band_furthest_first() -> None:
    tasks = pd.DataFrame({
        "key": ["load-11", "work-5", "ok-1"], "task": ["load", "work", "ok"],
        "actual_s": [0.2573, 0.6, 0.1], "predicted_s": [0.18, 0.02, 0.1], "lo_s": [0.1, 0.01, 0.05],
        "hi_s": [0.2568, 0.024, 0.2], "error_pct": [-30.0, -97.0, 0.0], "outside": ["slow", "slow", ""],
        "source": "history"})
    rep = PredictionReport(tasks, pd.DataFrame())
    assert rep.unusually_slow["key"].tolist() == ["work-5", "load-11"]
    text = str(rep)
    # rounded alike, 0.257 s and 0.2568 s read "0.257 s > 0.257 s": the distance is said
    assert "load-11 (0.257 s, 0.19% over the band's top 0.257 s)" in text
    assert "work-5 (0.6 s, 25.0x the band's top 0.024 s)" in text
    assert text.index("work-5") < text.index("load-11") and "about 1 call in 10 by chance" in text


def test_the_html_report_names_its_columns_for_a_reader() -> None:
    tasks = pd.DataFrame({
        "key": ["load-11"], "task": ["load"], "actual_s": [0.2573], "predicted_s": [0.18], "lo_s": [0.1],
        "hi_s": [0.2568], "error_pct": [-30.0], "outside": ["slow"], "source": "history"})
    families = pd.DataFrame([{"task": "load", "n": 1, "actual_median_s": 0.2573, "predicted_median_s": 0.18,
                              "mdape_pct": 30.0, "in_band_pct": 0.0, "slow": 1}])
    shown = PredictionReport(tasks, families)._repr_html_()
    for header in ("median error (%)", "in 80% band (%)", "band&#x27;s top (s)", "furthest first"):
        assert header in shown or header.replace("&#x27;", "'") in shown, shown
    assert "mdape_pct" not in shown and "outside" not in shown
