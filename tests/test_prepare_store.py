"""A run's preparation finds its store once.

Finding the store walks the working directory and the folders above it (``store_home``:
a few ``stat`` calls per folder, ~40 µs in a project's subfolder); every hook a run gets
from the store and every question it asks of its history needs the same store, so
``prepare`` finds it once and hands it on (:func:`nbflow.store.hooks.run_store`).
"""

from __future__ import annotations

from typing import Any

import pytest

import nbflow as nf
from nbflow.store import store as store_mod
from nbflow.workflow import prepare, run_options


@nf.task
def one(x: int) -> int:
    return x + 1


def _wf() -> Any:
    with nf.Workflow("finds-its-store") as wf:
        one(one(1))
    return wf


def _finds(patch: pytest.MonkeyPatch) -> list[int]:
    """Counts the searches for the store from now on."""
    found: list[int] = []
    real = store_mod.store_home

    def counting(*a: Any, **k: Any) -> Any:
        found.append(1)
        return real(*a, **k)

    patch.setattr(store_mod, "store_home", counting)
    return found


@pytest.mark.parametrize("cache", [True, False])
def test_a_runs_preparation_looks_for_its_store_once(cache: bool) -> None:
    _wf().run(cache=cache)  # (history: the preparation below reads it)
    wf = _wf()
    with pytest.MonkeyPatch.context() as patch:
        found = _finds(patch)
        run = prepare(wf, run_options(wf, cache=cache))
    assert len(found) == 1, len(found)
    assert run.learned_priorities  # (the history was read, through the same store)
    assert (run.result_cache is not None) == cache
    run.start_in_thread()  # (a prepared run holds the journal's writer until it ends)
    run.wait()
    assert run[run.nodes[-1]] == 3
