"""The dashboard reads the store the notebooks under the server's root write to: found from
the root as a run finds it from its folder.  It used to read ``<root>/.nbflow`` only, so a
lab started in a project's subfolder showed no runs (they went to the project root's store).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("jupyter_server")
from nbflow.server.handlers import store_home as dashboard_home
from nbflow.store import store_home


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("NBFLOW_HOME", raising=False)
    monkeypatch.setenv("NBFLOW_CEILING_DIRECTORIES", str(tmp_path.parent))  # (nothing above counts)
    root = tmp_path / "proj"
    (root / "notebooks" / "deep").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.chdir(tmp_path)  # the server's own working directory plays no part
    return root


def test_a_lab_in_a_subfolder_reads_the_project_store(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert dashboard_home(project / "notebooks") == project / ".nbflow"
    monkeypatch.chdir(project / "notebooks" / "deep")  # where a notebook under the root runs
    assert store_home() == dashboard_home(project / "notebooks")


def test_the_nearest_existing_store_wins_for_the_dashboard_too(project: Path) -> None:
    (project / "notebooks" / ".nbflow").mkdir()
    assert dashboard_home(project / "notebooks" / "deep") == project / "notebooks" / ".nbflow"
    assert dashboard_home(project) == project / ".nbflow"


def test_nbflow_home_wins(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_HOME", str(project / "elsewhere"))
    assert dashboard_home(project / "notebooks") == project / "elsewhere"
