"""Helpers of the batch tests: notebooks written with nbformat, the CLI as a real subprocess."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat

CLI = [sys.executable, "-m", "nbflow.cli"]


def write_notebook(path: Path, cells: list[str], *, parameters: str | None = None) -> Path:
    """A notebook of code ``cells``; ``parameters`` (if given) is a first cell tagged ``parameters``."""
    nb = nbformat.v4.new_notebook()
    if parameters is not None:
        nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.extend(nbformat.v4.new_code_cell(c) for c in cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def cli(*args: str, cwd: Path, timeout: float = 240, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``nbflow ARGS`` in a subprocess (the store is $NBFLOW_HOME, set per test)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kw
    )


def db() -> sqlite3.Connection:
    """A read connection to this test's journal."""
    return sqlite3.connect(Path(os.environ["NBFLOW_HOME"]) / "journal.sqlite")


def query(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = db()
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
