"""One value, one content hash, however its parts reached the cache.

A task's key is built from the content hashes of its inputs.  The same list can reach a
task in several forms: a map's collected items, a tolerant map's gathered items, Refs in a
list, a plain list given in the notebook, a list whose items are results left on Dask
workers (each hashed where it lives), or items served from the cache.  Each form must hash
to what the value hashes to, or a re-run where nothing changed misses ("input parts
changed").  So a container's hash is made only of its items' hashes
(``hashing.seq_digest`` / ``dict_digest``), which the cache already knows for results it
has seen and can ask a worker for when the item lives there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.core.remote import Remote
from nbflow.store import hashing
from nbflow.store.keys import KeyBuilder, collect_digest

ARRAY = np.arange(12.0).reshape(3, 4)
FRAME = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})

VALUES = [1, 2.5, "s", None, True, b"raw", 3 + 4j, 2**70, float("nan"), ARRAY, FRAME, (1, "a"),
          [ARRAY, {"k": [1, 2]}], frozenset({1, 2})]


def _parts(xs: Any) -> list[str]:
    return [hashing.value_hash(x) for x in xs]


@pytest.mark.parametrize("kind", [list, tuple, set, frozenset])
def test_a_sequence_hashes_from_its_items_hashes(kind):
    items = [1, 2.5, "s", None, (1, "a"), b"raw"] if kind in (set, frozenset) else VALUES
    value = kind(items)
    assert hashing.value_hash(value) == hashing.seq_digest(kind, _parts(value))
    if kind in (set, frozenset):  # any order of the parts: a set has none
        assert hashing.seq_digest(kind, list(reversed(_parts(value)))) == hashing.value_hash(value)


def test_a_dict_hashes_from_its_keys_and_values_hashes():
    value = {"a": ARRAY, 1: [FRAME, 2], ("t", 1): {"in": None}}
    pairs = [(hashing.value_hash(k), hashing.value_hash(v)) for k, v in value.items()]
    assert hashing.value_hash(value) == hashing.dict_digest(pairs)
    assert hashing.value_hash({"a": 1, "b": 2}) != hashing.value_hash({"b": 2, "a": 1})


def test_containers_of_one_content_in_other_types_differ():
    parts = _parts([1, 2])
    got = {hashing.seq_digest(t, parts) for t in (list, tuple, set, frozenset)}
    got.add(hashing.dict_digest([(parts[0], parts[1])]))
    assert len(got) == 5
    assert hashing.value_hash([1, 2]) != hashing.value_hash([2, 1])
    assert hashing.value_hash([[1], 2]) != hashing.value_hash([1, [2]])
    assert hashing.value_hash([]) != hashing.value_hash(())


def test_a_collect_hashes_as_its_list():
    values = [ARRAY, 3, "x"]
    assert collect_digest(_parts(values)) == hashing.value_hash(values)


class _Held(Remote):
    """A remote result whose 'worker' is this process (what the Dask backend's does
    across the network): ``on_worker`` runs the function next to the value."""

    __slots__ = ("held",)

    def __init__(self, key: str, value: Any) -> None:
        super().__init__(key, None, "worker-1")
        self.held = value

    def _fetch(self) -> Any:
        raise AssertionError("the cache must not bring a remote value here")

    def on_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.held, *args)


def _keys_for(*remotes: _Held) -> KeyBuilder:
    kb = KeyBuilder()
    for r in remotes:
        kb.remote_digests[r.key] = r.on_worker(hashing.value_hash)
    return kb


@pytest.mark.parametrize("form", ["list", "tuple", "set", "dict", "nested", "mixed"])
def test_remote_parts_hash_as_the_values_they_hold(form):
    a, b = _Held("a-0", ARRAY), _Held("b-0", FRAME)
    c = _Held("c-0", 7)
    kb = _keys_for(a, b, c)
    if form == "list":
        remote, local = [a, b], [ARRAY, FRAME]
    elif form == "tuple":
        remote, local = (a, b, c), (ARRAY, FRAME, 7)
    elif form == "set":
        remote, local = {c, 8}, {7, 8}
    elif form == "dict":
        remote, local = {"x": a, "y": [b]}, {"x": ARRAY, "y": [FRAME]}
    elif form == "nested":
        remote, local = [[a], (b, {"c": c})], [[ARRAY], (FRAME, {"c": 7})]
    else:  # a chunk's items: small ones came back as values, large ones stayed remote
        remote, local = [a, 3, b, "s"], [ARRAY, 3, FRAME, "s"]
    want = hashing.value_hash(local)
    assert kb.remote_digest(remote) == want
    assert kb.input_digest(remote, 0) == want  # (as a task argument: the same)
    assert kb.remote_digest(a) == hashing.value_hash(ARRAY)


def test_a_remote_result_is_never_hashed_by_pickling_its_handle():
    with pytest.raises(hashing.Unhashable):
        hashing.value_hash(_Held("a-0", 1))
    with pytest.raises(hashing.Unhashable):
        KeyBuilder().remote_digest([_Held("a-0", 1)])  # its hash was never taken


@nf.task
def square(i: int) -> int:
    if i == 3:
        raise ValueError("three")
    return i * i


@nf.task
def total(xs) -> Any:
    return sum(xs) if not isinstance(xs, dict) else sum(xs.values())


def _cached(run: Any, ref: Any) -> bool:
    return bool(run.tasks.set_index("key").loc[ref.key, "cached"])


@pytest.mark.parametrize("form", ["collect", "gather", "tolerant-map", "refs-in-list", "tuple",
                                  "set", "dict", "first"])
def test_a_task_hits_whatever_form_its_input_came_in(form):
    """``total`` is stored once with a plain value, then asked again with the same value
    built by the engine (a map's list, a gather, Refs in a container): one key, a hit."""
    plain: Any = {"collect": [0, 1, 4], "gather": [0, 1, 4], "tolerant-map": [0, 1, 4, 16],
                  "refs-in-list": [1, 4], "tuple": (1, 4), "set": {1, 4}, "dict": {"a": 1, "b": 4},
                  "first": [4]}[form]
    with nf.Workflow(f"plain-{form}") as wf:
        total(plain)
    assert wf.run().status == "completed"
    with nf.Workflow(f"built-{form}") as wf:
        if form == "collect":
            out = total(square.map(range(3)))
        elif form == "gather":
            out = total(nf.gather(square(0), square(1), square(3), square(2), min_success=1))
        elif form == "tolerant-map":
            out = total(square.map(range(5), on_error="skip"))
        elif form == "refs-in-list":
            out = total([square(1), square(2)])
        elif form == "tuple":
            out = total((square(1), square(2)))
        elif form == "set":
            out = total({square(1), square(2)})
        elif form == "dict":
            out = total({"a": square(1), "b": square(2)})
        else:
            out = total([nf.first(square(2), square(1))])
    run = wf.run(raise_on_error=False)
    assert run[out] == total.spec.fn(plain)
    assert _cached(run, out), run.explain(out)
