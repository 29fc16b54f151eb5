"""Where the store is: found by walking up from the working directory, as git finds .git."""

from __future__ import annotations

from pathlib import Path

import pytest

import nbflow as nf
from nbflow.store import store_home


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("NBFLOW_HOME", raising=False)
    # what is above the test's own folder (a stray /tmp/.nbflow) is not the test's business
    monkeypatch.setenv("NBFLOW_CEILING_DIRECTORIES", str(tmp_path.parent))
    root = tmp_path / "proj"
    (root / "notebooks" / "deep").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return root


def test_a_new_store_goes_to_the_project_root(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project / "notebooks" / "deep")
    assert store_home() == project / ".nbflow"


def test_the_nearest_existing_store_wins(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "notebooks" / ".nbflow").mkdir()
    monkeypatch.chdir(project / "notebooks" / "deep")
    assert store_home() == project / "notebooks" / ".nbflow"


def test_without_a_project_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBFLOW_HOME", raising=False)
    bare = tmp_path / "bare" / "dir"
    bare.mkdir(parents=True)
    monkeypatch.chdir(bare)
    above = [bare, *bare.parents]
    if any((d / m).exists() for d in above for m in (".git", "pyproject.toml", ".nbflow")):
        pytest.skip("this machine has a project marker above the temporary directory")
    assert store_home() == bare / ".nbflow"


def test_nbflow_home_still_wins(project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(project / "notebooks")
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / "elsewhere"))
    assert store_home() == tmp_path / "elsewhere"


def test_runs_in_a_subfolder_are_seen_from_the_root(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    @nf.task
    def one() -> int:
        return 1

    monkeypatch.chdir(project / "notebooks" / "deep")
    with nf.Workflow("from-subfolder") as wf:
        one()
    wf.run()
    monkeypatch.chdir(project)
    assert list(nf.runs()["name"]) == ["from-subfolder"]
    assert (project / ".nbflow" / "journal.sqlite").exists()


def test_the_search_stops_below_a_ceiling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBFLOW_HOME", raising=False)
    outer = tmp_path / "outer"
    inner = outer / "work" / "deep"
    inner.mkdir(parents=True)
    (outer / ".nbflow").mkdir()  # a store above the ceiling
    (outer / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.chdir(inner)
    monkeypatch.setenv("NBFLOW_CEILING_DIRECTORIES", str(tmp_path))
    assert store_home() == outer / ".nbflow"  # below the ceiling: found
    monkeypatch.setenv("NBFLOW_CEILING_DIRECTORIES", f"/nowhere:{outer}")
    assert store_home() == inner / ".nbflow"  # the ceiling hides the store and the marker
