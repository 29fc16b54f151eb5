"""``nbflow report / show / explain`` on stored runs, and the HTML report in Debian's Chromium.

The report must be one self-contained file: the browser test opens it from disk with every
network request refused, takes a screenshot (artifacts/browser/report.png), and checks that
the graph and the Gantt timeline are drawn and that the tasks table sorts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from batch_helpers import cli

import nbflow as nf
from nbflow.batch.report import render_html

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = os.environ.get("NBFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-dev-shm-usage",
]


@nf.task
def make(n):
    time.sleep(0.05 * n)
    return list(range(n))


@nf.task
def total(xs):
    time.sleep(0.02)
    return sum(xs)


@nf.task
def explode(xs):
    raise RuntimeError(f"cannot handle {len(xs)} items")


@nf.task
def after(x):
    return x


def _stored_run() -> nf.Run:
    with nf.Workflow("report-demo") as wf:
        parts = [make(n) for n in (1, 2, 3)]
        totals = [total(p) for p in parts]
        after(explode(parts[0]))
        total(totals)
    run = wf.run(raise_on_error=False)
    nf.output("score", 0.5)
    return run


def test_render_html_is_self_contained_with_all_sections() -> None:
    run = _stored_run()
    page = render_html(run.id)
    assert page.startswith("<!DOCTYPE html>")
    for part in ("nbflow-graph-box", "nbflow-gantt", "nbflow-tasks", "nbflow-error", "Metrics", "Parameters"):
        assert part in page, part
    assert "cannot handle 1 items" in page and "raise RuntimeError" in page  # the traceback, user code
    assert "scheduler.py" not in page  # engine frames trimmed
    assert "score" in page  # the run's outputs
    for remote in ("http://", "https://", "<link", "src="):
        assert remote not in page.replace('xmlns="http://www.w3.org/2000/svg"', ""), remote
    with pytest.raises(KeyError):
        render_html("no-such-run")


def test_report_renders_inline_in_jupyter_inside_an_iframe() -> None:
    import html

    from nbflow.batch.report import display_report

    run = _stored_run()
    shown = display_report(run.id)._repr_html_()
    assert shown.startswith('<iframe class="nbflow-report" srcdoc="')
    assert "<script>" not in shown  # escaped: the page's script and styles stay in the frame
    assert "nbflow-gantt" in html.unescape(shown)


def test_show_explain_and_report_commands(tmp_path: Path) -> None:
    run = _stored_run()
    shown = cli("show", run.id, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "explode-0" in shown.stdout and "failed" in shown.stdout and "RuntimeError" in shown.stdout
    ex = cli("explain", run.id, "total-0", cwd=tmp_path)
    assert ex.returncode == 0 and "total-0 (task total): ran: never ran" in ex.stdout
    again = _stored_run()
    ex2 = cli("explain", again.id, "make", cwd=tmp_path)
    assert "cache hit: code and inputs unchanged" in ex2.stdout and "- unchanged" in ex2.stdout
    missing = cli("explain", again.id, "nothing-9", cwd=tmp_path)
    assert missing.returncode == 1 and "no task" in missing.stderr
    out = tmp_path / "r.html"
    rep = cli("report", run.id[:15], "--html", str(out), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert "nbflow-gantt" in out.read_text()


def test_report_in_chromium_draws_graph_and_gantt_and_sorts(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (set NBFLOW_CHROMIUM)")
    run = _stored_run()
    out = tmp_path / "report.html"
    rep = cli("report", run.id, "--html", str(out), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    remote: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})

            def refuse(route: object) -> None:
                url = route.request.url  # type: ignore[attr-defined]
                if not url.startswith("file://"):
                    remote.append(url)
                    route.abort()  # type: ignore[attr-defined]
                else:
                    route.continue_()  # type: ignore[attr-defined]

            page.route("**/*", refuse)
            page.goto(out.as_uri())
            graph = page.locator(".nbflow-graph-box svg").first
            gantt = page.locator("svg.nbflow-gantt").first
            assert graph.is_visible() and gantt.is_visible()
            assert graph.bounding_box()["height"] > 50 and gantt.bounding_box()["width"] > 300
            assert page.locator(".nbflow-graph-box svg g, .nbflow-graph-box svg rect").count() >= 5
            assert page.locator("svg.nbflow-gantt rect.nbflow-bar").count() >= 6
            assert page.locator(".nbflow-status").first.inner_text() == "failed"
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)

            # click "duration" twice: descending, the longest task first
            header = page.locator("table.tasks th", has_text="duration")
            header.click()
            header.click()
            first_key = page.locator("table.tasks tbody tr td:first-child").first.inner_text()
            durations = run.tasks.dropna(subset=["duration_s"]).sort_values("duration_s", ascending=False)
            assert first_key == durations["key"].iloc[0]
        finally:
            browser.close()
    assert remote == []  # nothing but the file itself was requested
