"""The Locality tab of the live widget in a real JupyterLab and a real (headless) Chromium.

A notebook starts a two-worker Dask cluster, runs a ``%%workflow`` cell whose chain of
2 MB arrays is placed round-robin (so data moves), and the test opens the widget's
Locality tab: the report lists the moved edges with their bars and the suggestions
(``artifacts/browser/locality-tab.png``).  Uses the JupyterLab fixture of test_browser.py.
"""

from __future__ import annotations

import nbformat
import pytest

pytest.importorskip("distributed")
from test_browser import ALL_RAN, ARTIFACTS, _browser, _open, sync_api
from test_browser import lab as lab

CELLS = [
    "import numpy as np\nimport nbflow as nf\nfrom nbflow import locality\n"
    "from distributed import LocalCluster\n"
    "cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,\n"
    "                       dashboard_address=None, host='127.0.0.1')\n"
    "address = cluster.scheduler_address\n"
    "locality.set_default('round-robin')\n\n"
    "@nf.task\ndef make(n):\n    return np.ones(n // 8)\n\n"
    "@nf.task\ndef step(a):\n    return a + 1\n",
    "%%workflow locality-demo --backend {address} --no-cache\n"
    "a = make(2_000_000)\nb = step(a)\nc = step(b)\nd = step(c)\n",
    "assert d[0] == 4.0\nrun = nf.last_run()\nassert len(run.transfers) == 3\n"
    "print(run.locality_report())\nlocality.set_default('locality')\ncluster.close()\n",
]


def test_locality_tab_in_jupyterlab(lab: tuple[str, str], tmp_path) -> None:
    base, token = lab
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, tmp_path / "root" / "locality.ipynb")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "locality-tab.png"
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            try:
                _open(page, base, token, "locality.ipynb")
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "locality-open-failed.png"))
                raise
            page.wait_for_selector(".nbflow-widget .nbflow-progress[data-status='completed']",
                                   timeout=180_000)
            page.wait_for_function(ALL_RAN, timeout=180_000)
            errors = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
            assert errors.count() == 0, errors.first.inner_text()
            widget = page.locator(".nbflow-widget").first
            widget.get_by_role("tab", name="Locality").click()
            report = widget.locator(".nbflow-locality")
            report.wait_for(timeout=30_000)
            assert int(report.get_attribute("data-transfers")) == 3
            assert int(report.get_attribute("data-bytes-moved")) >= 3 * 2_000_000
            assert report.locator("tr.nbflow-edge").count() == 3
            assert report.locator("li.nbflow-suggestion").count() >= 1
            assert "make-0 → step-0" in report.inner_text()
            widget.scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            widget.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
