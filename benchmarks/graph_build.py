"""Graph-building cost per task call, for A/B comparisons of two nbflow trees.

Traces 20 000 calls as a chain (one Ref argument each), as a layered graph (two Ref
arguments each) and as one ``task.map`` over 20 000 items, and prints the median µs per
call of 5 builds as JSON.  Run it once per tree, alternating, e.g.::

    git worktree add /tmp/nbflow-old 97854eb
    PYTHONPATH=/tmp/nbflow-old .venv/bin/python benchmarks/graph_build.py   # before
    .venv/bin/python benchmarks/graph_build.py                               # after
"""

import gc
import json
import os
import time

os.environ["NBFLOW_STORE"] = "off"
import nbflow as nf


@nf.task
def f(x):
    return x

@nf.task
def g(a, b):
    return a

def build(n: int, shape: str) -> float:
    t = time.perf_counter()
    with nf.Workflow("b"):
        if shape == "map":  # one call per item of a long map
            f.map(range(n))
        elif shape == "chain":
            r = f(0)
            for _ in range(n):
                r = f(r)
        else:
            layer = [f(i) for i in range(100)]
            k = 100
            while k < n:
                layer = [g(layer[i], layer[(i * 7 + 3) % 100]) for i in range(100)]
                k += 100
    return (time.perf_counter() - t) / n * 1e6

out = {}
for shape in ("chain", "layered", "map"):
    samples = []
    for _ in range(5):
        gc.collect()
        samples.append(build(20000, shape))
    samples.sort()
    out[shape] = samples[2]
print(json.dumps(out))
