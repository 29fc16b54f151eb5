"""Small shared pieces of the reliability tests."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import nbflow as nf

REPO = Path(__file__).resolve().parents[2]


@nf.task
def inc(x: int) -> int:
    return x + 1


@nf.task
def add(a: int, b: int) -> int:
    return a + b


def chain_workflow(n: int, name: str = "rel") -> tuple[nf.Workflow, list[nf.Ref]]:
    """n independent inc tasks and one sum: a small graph with several store lookups."""
    with nf.Workflow(name) as wf:
        refs = [inc(i) for i in range(n)]
        total = refs[0]
        for r in refs[1:]:
            total = add(total, r)
    return wf, [*refs, total]


def store_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, nf.NbflowStoreWarning)]


def run_python(code: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (a new process opening the store)."""
    full = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
