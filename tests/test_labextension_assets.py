"""The committed lab extension is complete: the entry file its package.json names is there.

The built assets (``nbflow/labextension``) are committed so that ``pip install`` needs no
Node.  A rebuild renames the entry file (``static/remoteEntry.<hash>.js``) and rewrites
``package.json`` to name it; committing the new ``package.json`` without the new file once
left a checkout whose dashboard could not load (JupyterLab asks for a file that is not
there).  What is checked here is the commit, through git, and that the committed build is
the build of the committed sources (``extension/source_hash.py``: ``extension/build.sh``
records the hash of what it built, and keeps the committed build when it matches).
"""

from __future__ import annotations

import importlib.util
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


def _source_hash() -> str:
    spec = importlib.util.spec_from_file_location("source_hash", ROOT / "extension" / "source_hash.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.source_hash())


def test_the_lab_extension_is_built_from_the_extension_sources() -> None:
    # extension/build.sh records the hash of the sources it built (and skips a build of the
    # same sources, which would only rename the committed files): a source changed without
    # a rebuild would ship a dashboard that is not the code in extension/src
    recorded = (ROOT / LABEXT / "source.sha256").read_text().strip()
    assert recorded == _source_hash(), (
        "extension/ changed since nbflow/labextension was built: run "
        "`PYTHON=.venv/bin/python extension/build.sh` and commit nbflow/labextension")


def test_the_source_hash_follows_every_source_file(tmp_path: Path) -> None:
    root = tmp_path / "extension"
    shutil.copytree(ROOT / "extension", root,
                    ignore=shutil.ignore_patterns("node_modules", "lib", "*.tsbuildinfo"))
    spec = importlib.util.spec_from_file_location("source_hash_copy", root / "source_hash.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = module.source_hash(root)
    assert before == _source_hash()  # (the same sources in another folder: the same hash)
    (root / "src" / "panel.ts").write_text((root / "src" / "panel.ts").read_text() + "\n// edited\n")
    assert module.source_hash(root) != before
