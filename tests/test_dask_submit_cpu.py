"""nbflow's own CPU on the path from a Dask run's call to its graph reaching the scheduler.

Whether a client can take a batch is found once per client class, not by reading the
client method's signature on every run (``dask_batch.available``); a client whose own
instance carries the method is asked each time.  (The placement rule's one-loop costs are
checked against the rule as written in ``test_locality_choose_once.py``.)
"""

from __future__ import annotations

from nbflow.engine.backends import dask_batch


class _New:  # the expression-based call of recent versions of distributed
    def _graph_to_futures(self, expr, keys, span_metadata, workers=None, internal_priority=None):
        return {}


class _Old:  # an older distributed took a graph
    def _graph_to_futures(self, dsk, keys, workers=None, internal_priority=None):
        return {}


def test_a_client_class_is_checked_once_not_on_every_run(monkeypatch) -> None:
    monkeypatch.setattr(dask_batch, "_available", {}, raising=False)
    reads = []
    signature = dask_batch.inspect.signature

    def counted(fn):
        if getattr(fn, "__name__", "") == "_graph_to_futures":
            reads.append(fn)
        return signature(fn)

    monkeypatch.setattr(dask_batch.inspect, "signature", counted)
    assert all(dask_batch.available(_New()) for _ in range(5))
    assert not any(dask_batch.available(_Old()) for _ in range(5))
    assert len(reads) == 2  # (one per class)


def test_a_client_whose_instance_carries_the_method_is_asked_each_time(monkeypatch) -> None:
    monkeypatch.setattr(dask_batch, "_available", {}, raising=False)
    assert dask_batch.available(_New())
    odd = _New()
    odd._graph_to_futures = lambda dsk, keys: {}  # (an older call, on this instance only)
    assert not dask_batch.available(odd)
    assert dask_batch.available(_New())  # (the class's answer is not changed by it)
