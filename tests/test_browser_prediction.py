"""The live widget's ETA and Timeline tab in a real JupyterLab and Chromium.

Uses the JupyterLab fixture of ``tests/test_browser.py``.  The notebook runs a workflow
once (history), then again in the background: the widget's progress line shows the ETA
while it runs, and its Timeline tab draws actual bars with the predicted ones over them
(``artifacts/browser/prediction-eta.png``, ``prediction-timeline.png``).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from test_browser import ALL_RAN, ARTIFACTS, _browser, _open, lab, sync_api  # noqa: F401

pytestmark = pytest.mark.timeout(400)

CELLS = [
    "import time\nimport nbflow as nf",
    # ~7 s per run: on a loaded machine a 2.5 s run could end before the page showed it running
    "@nf.task\ndef step(i):\n    time.sleep(0.4 + 0.2 * (i % 3))\n    return i",
    "%%workflow pred --workers 2 --no-cache --quiet\nparts = [step(i) for i in range(24)]",
    "%%workflow pred --workers 2 --no-cache --background\nparts = [step(i) for i in range(24)]",
]


def test_widget_shows_eta_and_timeline(lab: tuple[str, str], tmp_path: Path) -> None:  # noqa: F811
    base, token = lab
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "root" / "prediction.ipynb")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            _open(page, base, token, "prediction.ipynb")
            page.wait_for_selector(".nbflow-widget .nbflow-progress[data-status='running']", timeout=180_000)
            widget = page.locator(".nbflow-widget").first
            eta = widget.locator(".nbflow-eta")
            eta.wait_for(timeout=60_000)
            assert eta.inner_text().startswith("ETA ") and "80%:" in eta.inner_text()
            widget.screenshot(path=str(ARTIFACTS / "prediction-eta.png"))
            widget.get_by_role("tab", name="Timeline").click()
            page.wait_for_selector(".nbflow-widget svg.nbflow-timeline", timeout=60_000)
            page.wait_for_selector(".nbflow-widget .nbflow-progress[data-status='completed']",
                                   timeout=120_000)
            page.wait_for_function(ALL_RAN, timeout=60_000)
            page.wait_for_function(
                "() => { const s = document.querySelector('.nbflow-widget svg.nbflow-timeline');"
                " return s && s.dataset.tasks === '24'; }", timeout=60_000)
            svg = widget.locator("svg.nbflow-timeline")
            assert svg.get_attribute("data-predicted") == "24"
            assert svg.locator("g.nbflow-bar[data-state='completed'] rect.actual").count() == 24
            assert svg.locator("rect.predicted").count() == 24
            page.wait_for_timeout(300)
            widget.screenshot(path=str(ARTIFACTS / "prediction-timeline.png"))
        finally:
            browser.close()
    assert (ARTIFACTS / "prediction-timeline.png").stat().st_size > 5_000
