"""What ``nf.plan`` costs on a long map over a Ref, with and without the join term's limits.

``nf.plan`` stands in for a map's items with as many as its newest run had, and replays the
placement rule on them in the simulator (``nbflow/locality/simulate.py``).  The rule's join
term looks at the consumers of each task and at their other inputs; a run's ``JoinGraph``
keeps it cheap (the first 8 consumers, only those with at most 32 data inputs), and the
simulator now keeps the same limits.  Without them, every item of a map feeding one reduce
passes over all the other items: quadratic in the map's length.

The workflow: ``agg(item.map(listing(N)))``, run once (``cache=False``) so the store holds
its N items, then planned (``nf.plan(wf, cache=False)``, 4 workers).  Two variants,
alternated in one process (``_harness.alternate``): ``limited`` (the code as it is) and
``unlimited`` (the simulator's limits raised past N: the join term's cost before the
limits).  The figure is the median ratio unlimited / limited per N.

Usage::

    .venv/bin/python benchmarks/plan_maps.py --sizes 500,1500 --repeat 15 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Iterator
from typing import Any

if __package__:
    from . import _harness
else:
    import _harness


def _workflow(nf: Any, n: int) -> Any:
    @nf.task
    def listing(k: int) -> list[int]:
        return list(range(k))

    @nf.task
    def item(i: int) -> bytes:
        return bytes(1000)  # a measured size: its edges carry bytes

    @nf.task
    def agg(xs: list[bytes]) -> int:
        return sum(map(len, xs))

    with nf.Workflow(f"plan-maps-{n}") as wf:
        agg(item.map(listing(n)))
    wf.run(cache=False)
    return wf


@contextlib.contextmanager
def unlimited(n: int) -> Iterator[None]:
    """The simulator's join term without its limits (each consumer, all its inputs)."""
    from nbflow.locality import simulate

    before = simulate.MAX_CONSUMERS, simulate.MAX_INPUTS
    simulate.MAX_CONSUMERS = simulate.MAX_INPUTS = 10 * n + 10
    try:
        yield
    finally:
        simulate.MAX_CONSUMERS, simulate.MAX_INPUTS = before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="500,1500")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    nf = _harness.import_nbflow()
    log = _harness.progress("plan_maps")
    doc: dict[str, Any] = {"benchmark": "plan_maps", "machine": _harness.machine_info(), "sizes": {}}
    with _harness.nbflow_home(replace=True):
        for n in (int(s) for s in args.sizes.split(",")):
            wf = _workflow(nf, n)
            assert nf.plan(wf, cache=False).maps == {"item.map-0": n}

            def limited(wf: Any = wf) -> float:
                return _harness.timed(lambda: nf.plan(wf, cache=False))

            def without(wf: Any = wf, n: int = n) -> float:
                with unlimited(n):
                    return _harness.timed(lambda: nf.plan(wf, cache=False))

            got = _harness.alternate({"limited": limited, "unlimited": without}, args.repeat, log=log)
            ratios = [u / x for u, x in zip(got["unlimited"], got["limited"], strict=True)]
            doc["sizes"][str(n)] = {
                "limited": _harness.summarize(got["limited"], n),
                "unlimited": _harness.summarize(got["unlimited"], n),
                "unlimited_over_limited_median": statistics.median(ratios),
            }
            log(f"N={n}: limited {statistics.median(got['limited']):.3f} s, unlimited "
                f"{statistics.median(got['unlimited']):.3f} s")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
