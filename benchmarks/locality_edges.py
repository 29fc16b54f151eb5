"""Which edges move bytes: nbflow's placement against plain Dask, edge by edge.

``benchmarks/locality.py`` compares the *total* bytes Dask moved between workers for a
workload run by nbflow (placement ``"locality"``) and the same graph as ``dask.delayed``.
This breaks both totals down by *producer task*: every worker's own transfer log
(``Worker.transfer_incoming_log``, key -> bytes, from which worker) is read after each run,
each fetched key is mapped to the task that made it (nbflow: ``run.locality.agent``;
Dask: the task name in the key), and the per-producer bytes of the two systems are listed
side by side, largest difference first, with how many copies of the result were made and
where the consumers ran.  The runs alternate (nbflow, Dask, nbflow, ...) on one 4-worker
``LocalCluster``.  It also checks that nbflow's ``run.transfers`` equals what the logs say,
so a difference is placement, not accounting.

``--why`` also prints, per run, where each task was hinted (nbflow) and where it ran (the
scheduler's task stream), which tasks Dask's work stealing moved and the balancer's
reasons (level, cost, the victim's and thief's occupancy), and every fetch as
``producer:from>to`` (workers numbered by address).

Usage::

    .venv/bin/python benchmarks/locality_edges.py --workload trace --repeat 3 \\
        --json benchmarks/locality_edges.json
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from typing import Any

if __package__:
    from . import _harness, locality
else:
    import _harness  # type: ignore[no-redef]
    import locality  # type: ignore[no-redef]


def _log_since(client: Any, before: dict[str, int]) -> list[tuple[str, str, str, int]]:
    """``(dask key, from worker, to worker, bytes)`` of every fetch since ``before``."""
    def tail(start: dict[str, int], dask_worker: Any = None) -> list[tuple[str, str, int]]:
        log = list(dask_worker.transfer_incoming_log)[start.get(dask_worker.address, 0):]
        return [(str(k), str(e["who"]), int(v)) for e in log for k, v in e["keys"].items()]

    return [(k, who, to, n) for to, rows in client.run(tail, before).items()
            for k, who, n in rows]


def _steals(client: Any, since: float) -> list[tuple[str, str, str]]:
    """``(dask key, from worker, to worker)`` of every task Dask's work stealing moved
    (a confirmed steal) since the wall-clock time ``since``."""
    out = []
    for stamp, msg in client.get_events("stealing"):
        if stamp >= since and isinstance(msg, (list, tuple)) and msg and msg[0] == "confirm":
            out.append((str(msg[1]), str(msg[3]), str(msg[4])))
    return out


def _steal_requests(client: Any, since: float) -> list[tuple[Any, ...]]:
    """``(level, dask key, cost, victim's occupancy, thief's occupancy)`` of every steal
    Dask's balancer asked for since ``since`` (its reasons, in seconds)."""
    out = []
    for stamp, msg in client.get_events("stealing"):
        if stamp >= since and isinstance(msg, (list, tuple)) and msg and msg[0] == "request":
            out += [(r[1], str(r[2]), round(r[3], 4), round(r[5], 4), round(r[7], 4))
                    for r in msg[1]]
    return out


def _stream_on(dask_scheduler: Any = None) -> None:
    """Keep the scheduler's task stream (where each task ran) from now on."""
    from distributed.diagnostics.task_stream import TaskStreamPlugin

    if "task-stream" not in dask_scheduler.plugins:
        dask_scheduler.add_plugin(TaskStreamPlugin(dask_scheduler))


def _ran_on(client: Any, keys: set[str]) -> dict[str, str]:
    """Dask key -> the worker that computed it, from the scheduler's task stream."""
    def stream(dask_scheduler: Any = None, wanted: Any = None) -> dict[str, str]:
        plugin = dask_scheduler.plugins.get("task-stream")
        rows = list(plugin.buffer) if plugin is not None else []
        return {str(r["key"]): str(r["worker"]) for r in rows if str(r["key"]) in wanted}
    return client.run_on_scheduler(stream, wanted=keys)


def nbflow_edges(client: Any, spec: list[Any]) -> dict[str, Any]:
    import nbflow as nf
    from nbflow import locality as loc

    tasks = {fn: nf.task(fn) for _, fn, _ in spec}
    with nf.Workflow("locality-edges") as wf:
        refs: dict[str, Any] = {}
        for key, fn, args in spec:
            real = tuple(refs[a[1]] if isinstance(a, tuple) and a[:1] == ("ref",) else a
                         for a in args)
            refs[key] = tasks[fn](*real)
    name_of = {r.key: name for name, r in refs.items()}
    before = locality._logs(client)
    since = time.time()
    with loc.placement("locality"):
        run = wf.run(backend=client, cache=False)
        run[refs["end"]]
    rows = _log_since(client, before)
    agent = run.locality.agent
    node_of = agent.node_of  # dask key -> task key
    ran = _ran_on(client, set(node_of))
    stolen = {name_of.get(node_of[k], k) for k, _, _ in _steals(client, since) if k in node_of}
    asked = [(lv, name_of.get(node_of.get(k, ""), k), *rest)
             for lv, k, *rest in _steal_requests(client, since)]
    seconds = {name_of.get(t, t): agent.seconds(t) for t in node_of.values()}
    where = {name_of.get(t, t): {"hint": agent.hint_of.get(k), "ran": ran.get(k)}
             for k, t in node_of.items()}
    per: collections.Counter[str] = collections.Counter()
    copies: collections.Counter[str] = collections.Counter()
    for k, _, _, n in rows:
        task = node_of.get(k)
        if task is not None:
            per[name_of.get(task, task)] += n
            copies[name_of.get(task, task)] += 1
    transfers = run.transfers
    out = {"per_producer": dict(per), "copies": dict(copies), "total": sum(per.values()),
           "run_transfers_bytes": int(transfers["bytes"].sum()) if len(transfers) else 0,
           "logged_total": sum(n for _, _, _, n in rows),
           "where": where, "stolen": sorted(stolen), "steal_requests": asked,
           "seconds_known": seconds, "typical_s": agent.placer.task_seconds,
           "fetches": sorted({(name_of.get(node_of.get(k, ""), k), who, to)
                              for k, who, to, _ in rows})}
    del run, wf
    return out


def dask_edges(client: Any, spec: list[Any]) -> dict[str, Any]:

    stamp = time.time_ns()
    nodes = locality.delayed_graph(spec, stamp=stamp)
    before = locality._logs(client)
    since = time.time()
    client.compute(nodes["end"]).result()
    rows = _log_since(client, before)
    keys = {f"{key}-{stamp}" for key, _, _ in spec}
    where = {k.rsplit("-", 1)[0]: {"ran": w} for k, w in _ran_on(client, keys).items()}
    stolen = sorted(k.rsplit("-", 1)[0] for k, _, _ in _steals(client, since) if k in keys)
    asked = [(lv, k.rsplit("-", 1)[0], *rest) for lv, k, *rest in _steal_requests(client, since)]
    per: collections.Counter[str] = collections.Counter()
    copies: collections.Counter[str] = collections.Counter()
    for k, _, _, n in rows:
        name = k.rsplit("-", 1)[0]
        per[name] += n
        copies[name] += 1
    return {"per_producer": dict(per), "copies": dict(copies), "total": sum(per.values()),
            "logged_total": sum(n for _, _, _, n in rows), "where": where, "stolen": stolen,
            "steal_requests": asked,
            "fetches": sorted({(k.rsplit("-", 1)[0], who, to) for k, who, to, _ in rows})}


def _order(name: str) -> tuple[int, str]:
    digits = "".join(c for c in name if c.isdigit())
    return (int(digits) if digits else 10**9, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="trace", choices=sorted(locality.WORKLOADS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--why", action="store_true",
                    help="per sample: where each task was hinted and ran, and what was stolen")
    args = ap.parse_args()
    spec = locality.WORKLOADS[args.workload]()
    samples: dict[str, list[dict[str, Any]]] = {"nbflow": [], "dask": []}
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        client.run_on_scheduler(_stream_on)
        nbflow_edges(client, spec)  # warm-up (imports, worker caches)
        for _ in range(args.repeat):
            samples["nbflow"].append(nbflow_edges(client, spec))
            samples["dask"].append(dask_edges(client, spec))
    names = sorted({n for s in samples["nbflow"] + samples["dask"] for n in s["per_producer"]})

    def med(system: str, name: str, field: str = "per_producer") -> float:
        return statistics.median(s[field].get(name, 0) for s in samples[system])

    edges = sorted(({"producer": n, "nbflow_bytes": med("nbflow", n), "dask_bytes": med("dask", n),
                     "nbflow_copies": med("nbflow", n, "copies"),
                     "dask_copies": med("dask", n, "copies")} for n in names),
                   key=lambda e: -(e["nbflow_bytes"] - e["dask_bytes"]))
    totals = {s: [x["total"] for x in samples[s]] for s in samples}
    doc = {"workload": args.workload, "tasks": len(spec), "repeat": args.repeat,
           "machine": _harness.machine_info(),
           "totals_bytes": totals,
           "nbflow_run_transfers_equal_logs": all(
               s["run_transfers_bytes"] == s["logged_total"] for s in samples["nbflow"]),
           "edges": edges}
    for e in edges:
        if e["nbflow_bytes"] or e["dask_bytes"]:
            print(f"{e['producer']:>6}: nbflow {e['nbflow_bytes'] / 1e6:7.2f} MB "
                  f"({e['nbflow_copies']:g} copies)  dask {e['dask_bytes'] / 1e6:7.2f} MB "
                  f"({e['dask_copies']:g} copies)")
    print("totals MB: nbflow", [round(t / 1e6, 1) for t in totals["nbflow"]],
          "dask", [round(t / 1e6, 1) for t in totals["dask"]],
          "| run.transfers == logs:", doc["nbflow_run_transfers_equal_logs"])
    if args.why:
        for system in samples:
            for k, s in enumerate(samples[system]):
                print(f"-- {system} sample {k}: {s['total'] / 1e6:.1f} MB, stolen {s['stolen']}")
                print("   steal requests (level, task, cost s, victim occ s, thief occ s):",
                      s["steal_requests"])
                if "seconds_known" in s:
                    print(f"   typical {s['typical_s']:.4f} s; known:",
                          " ".join(f"{t}={v:.3f}" for t, v in sorted(
                              s["seconds_known"].items(), key=lambda i: _order(i[0]))
                              if v is not None))
                ports = {w: n for n, w in enumerate(sorted({v for x in s["where"].values()
                                                            for v in x.values() if v}))}
                print("   ran:", " ".join(f"{t}@{ports.get(x['ran'], '?')}"
                                         + (f"(hint {ports.get(x['hint'], '-')})"
                                            if x.get("hint") != x["ran"] and "hint" in x else "")
                                         for t, x in sorted(s["where"].items(),
                                                            key=lambda i: _order(i[0]))))
                print("   fetched:", " ".join(f"{p}:{ports.get(a, '?')}>{ports.get(b, '?')}"
                                             for p, a, b in sorted(s["fetches"],
                                                                   key=lambda f: _order(f[0]))))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)


if __name__ == "__main__":
    main()
