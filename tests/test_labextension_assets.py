"""The committed lab extension is complete: the entry file its package.json names is there.

The built assets (``nbflow/labextension``) are committed so that ``pip install`` needs no
Node.  A rebuild renames the entry file (``static/remoteEntry.<hash>.js``) and rewrites
``package.json`` to name it; committing the new ``package.json`` without the new file once
left a checkout whose dashboard could not load (JupyterLab asks for a file that is not
there).  ``.ci/setup.sh`` rebuilds the assets where npm is found, so the working tree may hold
a fresh build: what is checked here is the commit, through git.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABEXT = "nbflow/labextension"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)


def _entry(package_json: str) -> str:
    return json.loads(package_json)["jupyterlab"]["_build"]["load"]


def test_the_working_tree_lab_extension_has_its_entry_file() -> None:
    entry = _entry((ROOT / LABEXT / "package.json").read_text())
    assert (ROOT / LABEXT / entry).is_file(), f"{LABEXT}/package.json names {entry}, which is missing"


def test_the_committed_lab_extension_has_its_entry_file() -> None:
    if shutil.which("git") is None or _git("rev-parse", "HEAD").returncode != 0:
        pytest.skip("not a git checkout: the committed assets cannot be read")
    shown = _git("show", f"HEAD:{LABEXT}/package.json")
    assert shown.returncode == 0, shown.stderr
    entry = _entry(shown.stdout)
    there = _git("cat-file", "-e", f"HEAD:{LABEXT}/{entry}")
    assert there.returncode == 0, (
        f"the commit's {LABEXT}/package.json names {entry}, but the commit lacks that file: "
        f"add it (git add {LABEXT}/static) with the package.json of the same build")
