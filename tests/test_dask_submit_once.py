"""The Dask backend's per-task submission path does each piece of work once per task.

A task's arguments are walked once for what its submission needs (its remote results, in
order, for the adoption check, the placement hint and the release; its large local
values; whether it holds another backend's result), and a batch does not hand Dask's
``parse_input`` the arguments it returns unchanged.  What is checked is what is sent and
decided (the same as before), and that the work is not repeated; never timings.
"""

from __future__ import annotations

import random
import types
from typing import Any

import numpy as np
import pytest

import nbflow as nf
from nbflow.core.remote import Remote

distributed = pytest.importorskip("distributed")

import test_locality_ahead as _ahead  # noqa: E402

from nbflow.engine.backends import dask as dask_module  # noqa: E402
from nbflow.engine.backends import dask_batch  # noqa: E402
from nbflow.engine.backends.dask import DaskBackend, DaskResult  # noqa: E402

client = _ahead.client


class _Fut:
    def __init__(self, key: str) -> None:
        self.key = key
        self.status = "pending"


class _Foreign(Remote):
    __slots__ = ()

    def _fetch(self) -> Any:
        return 0

    def on_worker(self, fn: Any, *args: Any) -> Any:
        return fn(0, *args)


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def _nested(rng: random.Random, results: list[Any], depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.35:
        kind = rng.choice([list, tuple, dict, frozenset])
        items = [_nested(rng, results, depth + 1) for _ in range(rng.randint(0, 3))]
        if kind is dict:
            return {f"k{n}": x for n, x in enumerate(items)}
        if kind is frozenset:
            return frozenset(x for x in items if _hashable(x))
        return kind(items)
    if roll < 0.6:
        return rng.choice(results)
    if roll < 0.7:
        return np.zeros(rng.choice([10, 20_000]))  # 160 kB: large enough to scatter
    return rng.choice([1, "s", None, 2.5])


def test_one_walk_finds_what_the_three_walks_found() -> None:
    backend = DaskBackend("dask")
    results = [DaskResult(f"t{n}", _Fut(f"t{n}-x-{n}"), backend, n, "w") for n in range(4)]
    foreign = _Foreign("far", 1, None)
    rng = random.Random(3)
    for _ in range(400):
        args = tuple(_nested(rng, [*results, *([foreign] if rng.random() < 0.1 else [])])
                     for _ in range(rng.randint(0, 3)))
        kwargs = {"x": _nested(rng, results)} if rng.random() < 0.5 else None
        found: list[DaskResult] = []
        big: list[Any] = []
        holds_foreign = dask_module._scan(args, found, big)
        if kwargs:
            holds_foreign = dask_module._scan(kwargs, found, big) or holds_foreign
        assert found == dask_module._remote_results(args, kwargs)
        old_big: list[Any] = []
        dask_module._big_locals(args, old_big)
        if kwargs:
            dask_module._big_locals(kwargs, old_big)
        assert [id(v) for v in big] == [id(v) for v in old_big]
        assert holds_foreign == any(isinstance(r, Remote) and type(r) is not DaskResult
                                    for r in nf.core.remote.remotes_in((args, kwargs)))


class _Placement:
    keep_remote = True

    def __init__(self) -> None:
        self.asked: list[tuple[str, list[Any], list[str]]] = []

    def choose(self, key: str, unique: str, inputs: list[Any], resources: dict[str, float],
               after: list[str] = ()) -> list[str]:
        self.asked.append((key, list(inputs), list(after)))
        return ["tcp://w1"]

    def predicted_bytes(self, key: str) -> int | None:
        return None


class _Batch:
    def __init__(self) -> None:
        self.added: list[tuple[str, Any, tuple[Any, ...], Any]] = []

    def add(self, key: str, func: Any, args: tuple[Any, ...], hint: Any) -> Any:
        self.added.append((key, func, args, hint))
        return _Fut(key)


def test_a_task_submitted_ahead_walks_its_arguments_once(monkeypatch) -> None:
    backend = DaskBackend("dask")
    backend.placement = _Placement()
    backend.batch = _Batch()  # type: ignore[assignment]
    backend.ahead = types.SimpleNamespace(ahead={}, by_key={}, submitted_ahead=0,  # type: ignore[assignment]
                                          index_of=lambda key: None)
    a = DaskResult("a", _Fut("a-t-0"), backend, 10, "tcp://w1")
    b = DaskResult("b", _Fut("b-t-1"), backend, 20, "tcp://w2")

    def again(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the arguments were walked again")

    monkeypatch.setattr(dask_module, "remotes_in", again)  # (_remote_results' walk)
    monkeypatch.setattr(dask_module, "_big_locals", again)
    made = backend.submit_ahead(2, "c", len, (a, [b, 3]), {"k": a}, ["a-t-0"])
    assert made is not None and made.worker == "tcp://w1"
    # what the placement, the adoption check and the batch were given is unchanged
    assert backend.placement.asked == [
        ("c", [("a", "tcp://w1", 10), ("b", "tcp://w2", 20), ("a", "tcp://w1", 10)], ["a-t-0"])]
    fut, unique, keys = backend.ahead.ahead[2]
    assert keys == ["a-t-0", "b-t-1", "a-t-0"] and unique == fut.key
    (key, _, sent, hint), = backend.batch.added
    assert key == unique and hint == ["tcp://w1"]
    assert sent[2] == (a.future, [b.future, 3]) and sent[3] == {"k": a.future}


def test_a_large_local_argument_still_stops_a_submission_ahead() -> None:
    backend = DaskBackend("dask")
    backend.batch = _Batch()  # type: ignore[assignment]
    backend.ahead = types.SimpleNamespace(ahead={}, by_key={}, submitted_ahead=0,  # type: ignore[assignment]
                                          index_of=lambda key: None)
    big = np.zeros(20_000)
    assert backend.submit_ahead(1, "c", len, ([big],), None, []) is None  # (not scattered yet)
    assert backend.submit_ahead(1, "c", len, (_Foreign("far", 1, None),), None, []) is None
    assert backend.batch.added == []


def test_each_dask_call_walks_its_arguments_for_remote_results_once(client, monkeypatch) -> None:
    calls = []
    real = dask_module._remote_results

    def counted(args: Any, kwargs: Any) -> list[DaskResult]:
        calls.append(1)
        return real(args, kwargs)

    monkeypatch.setattr(dask_module, "_remote_results", counted)
    wf, out = _ahead.chains("walk-once", n_chains=2, length=3)
    run = wf.run(backend=client, cache=False)
    assert run[out] == 1000 * (0 + 2) + 1000 * (1 + 2)
    # one walk per call: adopting the future sent ahead, placing, releasing its inputs
    assert len(calls) == len(wf.nodes)
    assert run.backends["dask"].ahead.adopted == len(wf.nodes) - 1 + run.backends["dask"].sent_early


def test_a_batch_parses_only_what_may_hold_a_future(monkeypatch) -> None:
    batch = dask_batch.Batch(None)
    parsed: list[Any] = []
    real = batch._parse

    def parse(obj: Any) -> Any:
        parsed.append(obj)
        return real(obj)

    batch._parse = parse  # type: ignore[method-assign]
    producer = batch.add("p-t-0", len, ("topic", len, ([1],), None), None)
    inner = (producer, [producer, 2])
    batch.add("c-t-1", dask_module._apply_located, ("topic", len, inner, None), ["tcp://w"])
    assert parsed == [([1],), inner]  # (not the topic, the function, nor an absent kwargs)
    _, task, worker, _ = batch.items[1]
    assert task.dependencies == {"p-t-0"} and worker == "tcp://w"
    reference = batch._task("c-t-1", dask_module._apply_located,
                            *[real(a) for a in ("topic", len, inner, None)])
    assert task.args == reference.args
