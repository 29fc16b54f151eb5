"""What each task printed, in the widget's Tasks tab, in a real JupyterLab and browser.

A ``%%workflow`` cell runs three printing tasks (one prints more than the table shows); a
later cell shows the same run read back from the store as a widget.  In both widgets the
Tasks tab has each task's output folded under its row; unfolded it shows the text, and the
long one says it was truncated (``artifacts/browser/task-output-live.png`` and
``task-output-stored.png``).  The JupyterLab fixture is the one of ``test_browser.py``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from test_browser import ALL_RAN, ARTIFACTS, _browser, _open, sync_api
from test_browser import lab as lab  # the JupyterLab fixture (re-exported, so pytest finds it)

pytestmark = pytest.mark.timeout(600)

CELLS = [
    "import nbflow as nf",
    "@nf.task\ndef talk(i):\n    print(f'hello from task {i}')\n    if i == 2:\n"
    "        print('row ' * 1100)\n    return i",
    "%%workflow printed --no-cache\nout = [talk(i) for i in range(3)]",
    "from nbflow.notebook import show\nshow(nf.load_run(nf.last_run().id), widget=True)",
]


def _check_tasks_tab(page: object, widget: object, shot: Path) -> None:
    widget.locator(".lm-TabBar-tab", has_text="Tasks").first.click()
    table = widget.locator("table.nbflow-tasks")
    table.wait_for(state="visible", timeout=30_000)
    short = widget.locator("details.nbflow-printed[data-key='talk-0']")
    long = widget.locator("details.nbflow-printed[data-key='talk-2']")
    assert short.locator("summary").inner_text() == "1 line"
    assert not short.locator("pre").is_visible()  # folded until asked for
    short.locator("summary").click()
    long.locator("summary").click()
    assert short.locator("pre").inner_text().strip() == "hello from task 0"
    assert "hello from task 2" in long.locator("pre").inner_text()
    note = long.locator(".nbflow-truncated")
    assert note.is_visible() and "truncated" in note.inner_text()
    assert "run.logs('talk-2')" in note.inner_text()
    assert page.get_by_role("button", name="No", exact=True).count() == 0  # (no news prompt: dh.quiet_lab)
    page.wait_for_timeout(300)
    widget.screenshot(path=str(shot))


def test_tasks_tab_shows_each_tasks_output(lab: tuple[str, str], tmp_path: Path) -> None:
    base, token = lab
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "root" / "printed.ipynb")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            _open(page, base, token, "printed.ipynb")
            page.wait_for_function(ALL_RAN, timeout=180_000)
            two_done = ("() => document.querySelectorAll("
                        "\".nbflow-widget .nbflow-progress[data-status='completed']\").length >= 2")
            try:
                page.wait_for_function(two_done, timeout=60_000)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "task-output-failed.png"), full_page=True)
                raise
            errors = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
            assert errors.count() == 0, errors.first.inner_text()
            live, stored = page.locator(".nbflow-widget").nth(0), page.locator(".nbflow-widget").nth(1)
            _check_tasks_tab(page, live, ARTIFACTS / "task-output-live.png")
            _check_tasks_tab(page, stored, ARTIFACTS / "task-output-stored.png")
        finally:
            browser.close()
