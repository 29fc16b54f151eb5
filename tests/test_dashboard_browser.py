"""The "Workflow runs" panel and run view in a real JupyterLab, in Debian's Chromium.

JupyterLab is started by the test (127.0.0.1, a token) with ``NBFLOW_HOME`` pointing at a
fresh store; runs are started as plain scripts in their own processes, so everything the
page shows came through the store and the server extension:

- a batch run appears in the panel while it runs, and its graph turns green live
  (``artifacts/browser/dashboard-panel.png``, ``dashboard-live.png``, ``dashboard-done.png``);
- every tab of the run view renders (graph, timeline, tasks with sort and filter, errors,
  report) (``dashboard-tab-*.png``);
- the Cancel button stops a long run in another process (``dashboard-cancelled.png``).

Skips (with the reason) when Playwright or Chromium is missing; never downloads a browser.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

import nbflow as nf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dashboard_harness as dh

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = os.environ.get("NBFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                 "--disable-dev-shm-usage"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (set NBFLOW_CHROMIUM); the browser test needs one",
                allow_module_level=True)
if shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is None:
    pytest.skip("jupyterlab is not installed in this environment", allow_module_level=True)

# A batch job of about 6 s: a load, 80 mapped steps on 4 workers, a failing check, a summary.
BATCH = """
import time
import nbflow as nf

@nf.task
def load(n):
    time.sleep(0.5)
    return list(range(n))

@nf.task
def step(x):
    time.sleep(0.25)
    return x * x

@nf.task
def summary(xs):
    return sum(xs)

@nf.task
def check(xs):
    time.sleep(0.3)
    raise ValueError(f"check failed: {len(xs)} rows is not enough")

with nf.Workflow("nightly-etl") as wf:
    rows = load(80)
    squares = step.map(rows)
    total = summary(squares)
    check(rows)
run = wf.run(workers=4, raise_on_error=False, cache=False)
print("STATUS", run.status, run.id, flush=True)
"""

PANEL = "#nbflow-runs"


@pytest.fixture
def lab(tmp_path: Path):
    with dh.jupyter(tmp_path, tmp_path / "store", lab=True) as server:
        yield server, tmp_path


def _page(p: object, server: dh.Server) -> object:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{server.base}/lab?token={server.token}", wait_until="domcontentloaded")
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.commands.hasCommand('nbflow:open-runs')",
        timeout=120_000)
    # after the layout is restored (which would otherwise re-show the file browser)
    page.evaluate("async () => { await window.jupyterapp.restored;"
                  " await window.jupyterapp.commands.execute('nbflow:open-runs'); }")
    # JupyterLab's "get notified about Jupyter news?" toast would cover part of the view
    page.add_style_tag(content=".Toastify { display: none !important; }")
    page.wait_for_selector(f"{PANEL} .nbflow-RunsPanel-footer", timeout=30_000)
    return browser, page


def _shot(page: object, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.wait_for_timeout(250)
    page.screenshot(path=str(path))
    return path


def test_batch_run_appears_and_its_graph_turns_green_live(lab) -> None:
    server, tmp = lab
    with sync_api.sync_playwright() as p:
        browser, page = _page(p, server)
        proc = dh.script(tmp, server.home, BATCH, "batch.py")
        try:
            # the run shows up in the panel while it is running
            item = page.locator(f"{PANEL} li.nbflow-run").first
            page.wait_for_selector(f"{PANEL} li.nbflow-run[data-status='running']", timeout=60_000)
            assert "nightly-etl" in item.inner_text()
            _shot(page, "dashboard-panel-live.png")
            item.click()
            view = page.locator(".nbflow-RunView").first
            page.wait_for_selector(".nbflow-RunView svg.nbflow-graph", timeout=30_000)
            # live: the graph is drawn while some nodes are not yet completed ...
            page.wait_for_function(
                "() => { const v = document.querySelector('.nbflow-RunView');"
                " const n = s => v.querySelectorAll('svg.nbflow-graph g.nbflow-node' + s).length;"
                " return v.dataset.status === 'running' &&"
                " n('[data-state=\"completed\"]') > 0 && n(':not([data-state=\"completed\"])') > 0; }",
                timeout=60_000)
            _shot(page, "dashboard-live.png")
            # the README's picture: the panel and the live graph
            page.screenshot(path=str(ARTIFACTS / "dashboard-readme.png"),
                            clip={"x": 0, "y": 0, "width": 1000, "height": 300})
            # ... and it turns green without reloading anything, as the run goes on
            page.wait_for_selector(".nbflow-RunView[data-status='failed']", timeout=90_000)
            out, _ = proc.communicate(timeout=60)
            assert "STATUS failed" in out.decode()
            graph = view.locator("svg.nbflow-graph")
            assert graph.get_attribute("data-level") == "maps"  # the 80 steps are one group node
            assert "step ×80" in graph.inner_html()
            states = graph.locator("g.nbflow-node").evaluate_all("ns => ns.map(n => n.dataset.state)")
            assert states.count("failed") == 1 and states.count("completed") == len(states) - 1
            fill = graph.locator("g.nbflow-node[data-state='completed'] rect").first.get_attribute("fill")
            assert fill == "#bbf7d0"  # the inline widget's green
            assert view.locator(".nbflow-cancel").is_hidden()  # nothing left to cancel
            _shot(page, "dashboard-done.png")
            panel_item = page.locator(f"{PANEL} li.nbflow-run[data-status='failed']")
            panel_item.wait_for(timeout=30_000)
            rid = panel_item.get_attribute("data-run-id")
            stored = nf.load_run(rid, home=server.home).tasks
            n = len(stored)
            assert n > 80  # the 80 steps and the tasks around them
            # a failed run says how many completed (all but the check), as the notebook view does
            said = panel_item.inner_text()
            assert f"{n - 1}/{n} tasks completed" in said and "1 failed" in said, said
            page.locator(PANEL).screenshot(path=str(ARTIFACTS / "dashboard-panel.png"))

            # every tab renders
            view.get_by_role("tab", name="Timeline").click()
            page.wait_for_selector(".nbflow-RunView svg.nbflow-timeline rect", timeout=30_000)
            assert view.locator("svg.nbflow-timeline rect").count() == int(stored.start.notna().sum())
            _shot(page, "dashboard-tab-timeline.png")
            view.get_by_role("tab", name="Tasks").click()
            rows = view.locator("table.nbflow-task-table tbody tr")
            rows.first.wait_for(timeout=30_000)
            assert rows.count() == n
            view.locator("th[data-col='state']").click()  # sort by state: completed < failed
            assert rows.last.get_attribute("data-state") == "failed"
            view.locator("th[data-col='state']").click()  # and back, descending
            assert rows.first.get_attribute("data-state") == "failed"
            view.locator("input.nbflow-task-filter").fill("step")
            cols = stored[["key", "task", "state", "error"]].itertuples(index=False)
            expected = sum("step" in f"{k} {t} {st} {e or ''}".lower() for k, t, st, e in cols)
            assert expected >= 80 and rows.count() == expected  # the steps (and their map node)
            _shot(page, "dashboard-tab-tasks.png")
            view.get_by_role("tab", name="Errors").click()
            err = view.locator("details.nbflow-error[data-key='check-0']")
            err.wait_for(timeout=30_000)
            assert "ValueError: check failed: 80 rows is not enough" in err.inner_text()
            assert "Traceback" in err.inner_text()
            _shot(page, "dashboard-tab-errors.png")
            view.get_by_role("tab", name="Report").click()
            page.wait_for_selector(".nbflow-RunView [data-pane='Report'] .nbflow-empty, "
                                   ".nbflow-RunView iframe.nbflow-report", timeout=30_000)
            view.get_by_role("tab", name="Graph").click()
            assert view.locator("svg.nbflow-graph").is_visible()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            browser.close()


def test_cancel_button_stops_a_long_run(lab) -> None:
    server, tmp = lab
    with sync_api.sync_playwright() as p:
        browser, page = _page(p, server)
        proc = dh.script(tmp, server.home, dh.LONG_RUN, "long.py")
        try:
            page.locator(f"{PANEL} li.nbflow-run[data-status='running']").first.click(timeout=60_000)
            cancel = page.locator(".nbflow-RunView .nbflow-cancel")
            cancel.wait_for(state="visible", timeout=30_000)
            page.wait_for_function(
                "() => document.querySelectorAll("
                "'.nbflow-RunView g.nbflow-node[data-state=\"running\"]').length > 0",
                timeout=30_000)
            cancel.click()
            page.wait_for_selector(".nbflow-RunView[data-status='cancelled']", timeout=60_000)
            out, _ = proc.communicate(timeout=60)
            assert "STATUS cancelled" in out.decode()
            assert cancel.is_hidden()
            page.wait_for_selector(f"{PANEL} li.nbflow-run[data-status='cancelled']", timeout=30_000)
            # the list says how many completed out of how many, and how many were cancelled:
            # not "302/302 tasks", which read as all work done
            item = page.locator(f"{PANEL} li.nbflow-run[data-status='cancelled']").first
            rid = item.get_attribute("data-run-id")
            counts = nf.load_run(rid, home=server.home).task_counts
            done, total = counts.get("completed"), counts.total
            assert counts.get("cancelled") > 0 and done < total
            text = item.locator(".nbflow-run-facts").inner_text()
            assert text.startswith(f"{done}/{total} tasks completed ·"), text
            said = re.search(r"· (\d+) cancelled", text)
            assert said and int(said.group(1)) == counts.get("cancelled"), text
            assert "cancelled" in item.locator(".nbflow-run-status").inner_text()
            # and its bar is filled to the completed share, not to the end
            width = item.locator(".nbflow-bar-fill").evaluate("b => b.style.width")
            assert width == f"{math.floor(done / total * 100 + 0.5)}%"  # (JavaScript's Math.round)
            page.locator(PANEL).screenshot(path=str(ARTIFACTS / "dashboard-panel-cancelled.png"))
            _shot(page, "dashboard-cancelled.png")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            browser.close()


# Six tasks on two workers that wait for a file the test writes, then a collector: while they
# wait, exactly 2 tasks run and 5 are pending (4 waiting tasks and the collector).
GATED = """
import os
import time
import nbflow as nf

@nf.task
def wait(i):
    while not os.path.exists("go"):
        time.sleep(0.05)
    return i

@nf.task
def total(xs):
    return sum(xs)

with nf.Workflow("gated") as wf:
    out = total([wait(i) for i in range(6)])
run = wf.run(workers=2, raise_on_error=False, cache=False)
print("STATUS", run.status, run.id, flush=True)
"""


def test_panel_shows_running_and_pending_of_a_live_run(lab) -> None:
    server, tmp = lab
    with sync_api.sync_playwright() as p:
        browser, page = _page(p, server)
        proc = dh.script(tmp, server.home, GATED, "gated.py")
        try:
            live = page.locator(f"{PANEL} li.nbflow-run[data-status='running'] .nbflow-run-facts")
            live.wait_for(timeout=60_000)
            # the panel refreshes once a second: wait for the two workers to have started
            page.wait_for_function(
                "s => { const f = document.querySelector(s); return f && /2 running/.test(f.textContent); }",
                arg=f"{PANEL} li.nbflow-run[data-status='running'] .nbflow-run-facts", timeout=60_000)
            facts = live.inner_text()
            assert facts.startswith("0/7 tasks done")
            assert "2 running" in facts and "5 pending" in facts
            # the bar draws the share at work (2 of 7 tasks), after the (empty) finished share
            bar = page.locator(f"{PANEL} li.nbflow-run[data-status='running'] .nbflow-bar-running")
            assert bar.evaluate("b => b.style.width") == "29%"
            page.locator(PANEL).screenshot(path=str(ARTIFACTS / "dashboard-panel-pending-running.png"))

            (tmp / "go").write_text("")
            out, _ = proc.communicate(timeout=60)
            assert "STATUS completed" in out.decode()
            done = page.locator(f"{PANEL} li.nbflow-run[data-status='completed']")
            done.wait_for(timeout=30_000)
            # a finished run is shown as before: its counts, no running or pending
            text = done.locator(".nbflow-run-facts").inner_text()
            assert text.startswith("7/7 tasks done")
            assert "running" not in text and "pending" not in text
            assert done.locator(".nbflow-bar-running").count() == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            browser.close()
