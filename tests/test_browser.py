"""The notebook experience in a real JupyterLab, in a real (headless) browser.

Starts JupyterLab on a free port with a token (its own subprocess, a temporary copy of
the notebooks as its root, killed at the end), opens notebooks in Debian's Chromium through
Playwright and runs them:

- quickstart.ipynb: run all cells, wait until the live widget says the run completed, check
  that the drawn graph has one completed node per task (``artifacts/browser/quickstart.png``);
- a background run: the widget updates live while the kernel is free, and a click on its
  Stop button cancels the run (``artifacts/browser/stop-live.png``, ``stop-cancelled.png``).

Skips (with the reason) when Playwright or Chromium is missing; never downloads a browser.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

import dashboard_harness as dh
import nbformat
import pytest

import nbflow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "example_notebooks" / "quickstart.ipynb"
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


def _stop_notebook() -> nbformat.NotebookNode:
    cells = [
        "import time\nimport nbflow as nf",
        "@nf.task\ndef step(i):\n    time.sleep(0.25)\n    return i\n\n"
        "@nf.task\ndef collect(xs):\n    return len(xs)",
        "%%workflow long --background --workers 3\ndone = collect(step.map(list(range(120))))",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


KERNEL_IDLE = (
    "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
    " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
    " return !!k && k.status === 'idle'; }"
)
ALL_RAN = (
    "() => { const w = window.jupyterapp.shell.currentWidget;"
    " const cells = w.content.widgets.filter(c => c.model.type === 'code');"
    " return cells.every(c => c.model.executionCount !== null)"
    "   && w.sessionContext.session.kernel.status === 'idle'; }"
)


def _open(page: object, base: str, token: str, name: str) -> None:
    page.goto(f"{base}/lab/tree/{name}?token={token}", wait_until="domcontentloaded")
    page.wait_for_function(KERNEL_IDLE, timeout=120_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def _browser(p: object) -> object:
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture
def lab(tmp_path: Path):
    """(base url, token) of a JupyterLab serving a copy of the quickstart notebook."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    nbformat.write(_stop_notebook(), root / "stop.ipynb")
    token = uuid.uuid4().hex
    log = tmp_path / "lab.log"
    dh.quiet_lab(tmp_path / "config")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"))
    env.pop("NBFLOW_HEADLESS", None)
    if not hasattr(nbflow, "load_ipython_extension"):
        # Until nbflow/__init__.py registers the magics on import (see tests/notebooks/nbharness.py),
        # the kernels of this server load them from an IPython startup file.
        startup = tmp_path / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-nbflow.py").write_text(
            "import nbflow.notebook\nnbflow.notebook.register_if_ipython()\n")
        env["IPYTHONDIR"] = str(tmp_path / "ipython")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.open_browser=False",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    proc, base = dh.serve(cmd, env=env, cwd=root, log=log, token=token)
    try:
        yield base, token
    finally:
        dh.stop(proc)


def test_quickstart_in_jupyterlab(lab: tuple[str, str]) -> None:
    base, token = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "quickstart.png"
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            _open(page, base, token, NOTEBOOK.name)
            # The live widget appears, then reports the run completed.
            page.wait_for_selector(".nbflow-widget", timeout=120_000)
            page.wait_for_selector(".nbflow-widget .nbflow-progress[data-status='completed']",
                                   timeout=120_000)
            page.wait_for_function(ALL_RAN, timeout=120_000)  # the last cell holds the assertions
            errors = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
            assert errors.count() == 0, errors.first.inner_text()
            widget = page.locator(".nbflow-widget").first
            progress = widget.locator(".nbflow-progress")
            total = int(progress.get_attribute("data-total"))
            assert progress.get_attribute("data-done") == str(total)
            graph = widget.locator("svg.nbflow-graph")
            assert graph.get_attribute("data-level") == "tasks"  # small graph: one node per task
            assert int(graph.get_attribute("data-tasks")) == total == 16
            assert graph.locator("g.nbflow-node").count() == total
            assert graph.locator("g.nbflow-node[data-state='completed']").count() == total
            # Tooltips carry the task's details.
            title = graph.locator("g.nbflow-node[data-key='clean-0'] > title").text_content()
            assert "state: completed" in title and "duration:" in title and "output size:" in title
            widget.scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            widget.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


def test_background_run_updates_live_and_stops_on_click(lab: tuple[str, str]) -> None:
    base, token = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            _open(page, base, token, "stop.ipynb")
            widget = page.locator(".nbflow-widget").first
            progress = widget.locator(".nbflow-progress")
            page.wait_for_selector(".nbflow-widget .nbflow-progress[data-status='running']", timeout=120_000)
            # The cell returned (the kernel is idle) while the run goes on and the widget keeps
            # moving: more tasks finish without anything being executed.
            page.wait_for_function(ALL_RAN, timeout=120_000)
            page.wait_for_function(
                "() => { const p = document.querySelector('.nbflow-widget .nbflow-progress');"
                " return p && Number(p.dataset.done) >= 10 && p.dataset.status === 'running'; }",
                timeout=60_000)
            seen = int(progress.get_attribute("data-done"))
            page.wait_for_function(
                "() => Number(document.querySelector('.nbflow-widget .nbflow-progress').dataset.done)"
                f" > {seen}", timeout=60_000)
            graph = widget.locator("svg.nbflow-graph")
            assert graph.get_attribute("data-level") == "maps"  # 122 tasks: the map is one group node
            assert "step ×120" in graph.inner_html()
            widget.screenshot(path=str(ARTIFACTS / "stop-live.png"))
            widget.get_by_role("button", name="Stop").click()
            page.wait_for_selector(".nbflow-widget .nbflow-progress[data-status='cancelled']", timeout=60_000)
            done = int(progress.get_attribute("data-done"))
            assert done == int(progress.get_attribute("data-total"))
            cancelled = widget.locator(".nbflow-count[data-state='cancelled']").inner_text()
            completed = widget.locator(".nbflow-count[data-state='completed']").inner_text()
            assert int(cancelled.split()[0]) > 0 and 0 < int(completed.split()[0]) < 120
            assert widget.get_by_role("button", name="cancelled").is_disabled()
            page.wait_for_timeout(300)
            widget.screenshot(path=str(ARTIFACTS / "stop-cancelled.png"))
        finally:
            browser.close()
