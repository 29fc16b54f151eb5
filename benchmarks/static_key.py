"""Cost of keying a live ETA's snapshot on its nodes' identity, against the key it replaced.

A snapshot of a run in flight (:func:`nbflow.predict.inflight.snapshot`) reads the graph's
fixed parts (keys, names, kinds, dependencies, priorities) only when the graph changed.
Since Session 14 (B) "changed" means: a node is not the same object as when they were read
(every node compared by identity), where before it was the node count and the last node,
which missed a map's node replaced by its collect.  The baseline is the old key, kept here
verbatim; a third column reads the parts on every call (what the key saves).  Same finished
run, alternated call by call (:func:`_harness.alternate`).

The run: ``--n`` items of a map over a Ref (``--n`` + 2 nodes).  Each sample calls
``snapshot`` ``--calls`` times; the figure is the median over ``--repeat`` samples, per call.
Alternated with them, the two keys' checks alone (1 000 calls a sample) on the same nodes.

Usage::

    python benchmarks/static_key.py [--n 2000] [--calls 50] [--repeat 31] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __package__:
    from . import _harness
else:
    import _harness

_OLD: weakref.WeakKeyDictionary[Any, tuple[int, Any, Any]] = weakref.WeakKeyDictionary()


def old_static_of(run: Any, nodes: list[Any], n: int) -> Any:
    """``inflight._static_of`` before Session 14 (B): keyed on the node count and last node."""
    from nbflow.predict.inflight import priority_of

    last = nodes[n - 1] if n else None
    got = _OLD.get(run)
    if got is not None and got[0] == n and got[1] is last:
        return got[2]
    head = nodes[:n]
    static = ([r.key for r in head], [r.name for r in head], [r.kind for r in head],
              [list(r.deps) for r in head], [priority_of(r) for r in head])
    _OLD[run] = (n, last, static)
    return static


def read_every_time(run: Any, nodes: list[Any], n: int) -> Any:
    """No cache: the parts read on every snapshot."""
    from nbflow.predict.inflight import priority_of

    head = nodes[:n]
    return ([r.key for r in head], [r.name for r in head], [r.kind for r in head],
            [list(r.deps) for r in head], [priority_of(r) for r in head])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=31)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    os.environ.setdefault("NBFLOW_HOME", tempfile.mkdtemp(prefix="nbflow-static-key-"))
    log = _harness.progress("static_key")
    import nbflow as nf
    from nbflow.predict import inflight

    @nf.task
    def items(n: int) -> list[int]:
        return list(range(n))

    @nf.task
    def item(x: int) -> int:
        return x

    with nf.Workflow("static-key") as wf:
        item.map(items(args.n))
    run = wf.run(cache=False)
    now = inflight._static_of

    def calls(static_of: Callable[[Any, list[Any], int], Any]) -> Callable[[], float]:
        def sample() -> float:
            inflight._static_of = static_of  # (snapshot looks it up at each call)
            try:
                seconds = _harness.timed(lambda: [inflight.snapshot(run) for _ in range(args.calls)])
                return seconds / args.calls
            finally:
                inflight._static_of = now
        return sample

    same = inflight.snapshot(run)
    inflight._static_of = old_static_of
    old = inflight.snapshot(run)
    assert (old.keys, old.kinds, old.deps) == (same.keys, same.kinds, same.deps), "the same parts"
    inflight._static_of = now
    samplers = {
        "identity key (now)": calls(now),
        "count and last node key (before)": calls(old_static_of),
        "no cache": calls(read_every_time),
    }
    # The key's own cost, against the old key's check (the count and the last node's identity)
    nodes = list(run.nodes)
    n = len(nodes)
    kept, last = nodes[:], nodes[-1]
    k = 1000

    def checks(check: Callable[[], bool]) -> Callable[[], float]:
        return lambda: _harness.timed(lambda: [check() for _ in range(k)]) / k

    samplers |= {
        "key check: identity of every node (now)": checks(lambda: inflight._same_nodes(kept, nodes, n)),
        "key check: count and last node (before)": checks(lambda: len(kept) == n and nodes[n - 1] is last),
    }
    got = _harness.alternate(samplers, args.repeat, log=log)
    med = {name: _harness.summarize(s, 1)["median_s"] for name, s in got.items()}
    out = {
        "benchmark": "static_key",
        "machine": _harness.machine_info(nf.__version__),
        "args": vars(args) | {"json": str(args.json) if args.json else None},
        "nodes": len(run.nodes),
        "median_us_per_call": {name: v * 1e6 for name, v in med.items()},
        "ratio_now_over_before": _harness.ratio(med["identity key (now)"],
                                                med["count and last node key (before)"]),
        "ratio_now_over_no_cache": _harness.ratio(med["identity key (now)"], med["no cache"]),
        "samples_s": got,
    }
    _harness.emit_json(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
