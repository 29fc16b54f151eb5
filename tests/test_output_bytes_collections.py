"""A list's, a tuple's, a set's or a dict's ``output_bytes`` off Dask is Dask's figure.

On Dask a result's ``output_bytes`` is Dask's ``sizeof`` of it, which measures a list, a
tuple, a set or a dict item by item.  On threads and processes the figure was None for
them (only cheap leaves were measured), so a task returning a list of arrays or a dict of
numbers had no size in ``run.tasks``, the journal or the history that predicts sizes.  Now
:func:`nbflow.core.sizes.output_size` applies Dask's rule for them, without importing
Dask: the same figure as ``dask.sizeof`` wherever Dask's own sampling cannot change it
(items of one size), and the same figure every time where it can.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.core import sizes
from nbflow.core.sizes import output_size

dask_sizeof = pytest.importorskip("dask.sizeof").sizeof


def _values() -> dict[str, object]:
    """Values whose Dask figure does not depend on which items Dask samples."""
    return {
        "floats": [float(i) for i in range(10_000)],
        "arrays": [np.zeros(100) for _ in range(50)],
        "few": [1.5, 2.5, np.ones(3)],
        "pair": (1.5, "name"),
        "ints": {3, 4, 5},
        "record": {"a": 1.5, "b": [1.0, 2.0], "c": np.ones(8)},
        "by_name": {f"k{i:05d}": np.ones(4) for i in range(1_000)},  # (keys of one size)
        "nested": [[float(j) for j in range(20)] for _ in range(30)],
        "scalars": [np.float64(i) for i in range(20)],  # (Dask: sys.getsizeof, not nbytes)
    }


@pytest.mark.parametrize("name", sorted(_values()))
def test_a_collection_is_measured_as_dask_measures_it(name: str) -> None:
    value = _values()[name]
    assert output_size(value) == dask_sizeof(value)


def test_the_figure_of_one_value_is_the_same_every_time() -> None:
    """Dask samples ten items of a long list at random; here they are evenly spaced, so a
    list of unequal items gets one figure, run after run."""
    value = [np.zeros(k % 7 * 10) for k in range(1_000)]
    first = output_size(value)
    assert first is not None and first > sys.getsizeof(value)
    assert all(output_size(value) == first for _ in range(20))


def test_what_cannot_be_measured_cheaply_is_unknown() -> None:
    """A collection that holds itself, or one so deeply nested that measuring it would visit
    more than MAX_VISITS values, is None (unknown), never a long walk."""
    itself: list[object] = [1.0]
    itself.append(itself)
    assert output_size(itself) is None
    deep: object = 1.0
    for _ in range(8):  # (ten samples a level: 10**8 values to visit)
        deep = [deep] * 20
    assert output_size(deep) is None
    shallow: object = 1.0
    for _ in range(3):
        shallow = [shallow] * 20
    assert output_size(shallow) == dask_sizeof(shallow)
    assert sizes.MAX_VISITS >= 10 ** 3


@nf.task
def float_list(n: int) -> list[float]:
    return [float(i) for i in range(n)]


@nf.task
def array_dict(n: int) -> dict[str, np.ndarray]:
    return {f"part{i:03d}": np.ones(64) for i in range(n)}


@nf.task
def item_list(i: int) -> list[float]:
    return [float(i)] * 4


@pytest.mark.parametrize("backend", ["local", "process"])
def test_on_threads_and_processes_lists_and_dicts_have_dasks_size(backend: str) -> None:
    with nf.Workflow(f"collection-bytes-{backend}") as wf:
        floats = float_list(10_000)
        parts = array_dict(12)
        item_list.map([1, 2, 3], batch=3)  # (batched items)
    run = wf.run(backend=backend, cache=False)
    t = run.tasks.set_index("key")
    items = [k for k in t.index if k.startswith("item_list-") and t.loc[k, "task"] == "item_list"]
    assert len(items) == 3, t
    # Dask's sizeof of the result the run holds (from a process: the list as unpickled
    # here, whose spare capacity Dask counts too)
    for key in (floats.key, parts.key, *items):
        assert t.loc[key, "output_bytes"] == dask_sizeof(run[key]), key
    assert t.loc[floats.key, "output_bytes"] >= dask_sizeof([float(i) for i in range(10_000)])
    # and the journal keeps what the run said
    stored = nf.history()
    rows = stored[stored["run_id"] == run.id].set_index("key")["output_bytes"]
    for key in (floats.key, parts.key, *items):
        assert not pd.isna(rows[key]) and int(rows[key]) == int(t.loc[key, "output_bytes"]), key
