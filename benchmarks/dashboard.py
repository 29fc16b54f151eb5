"""Dashboard benchmark: the server extension and the lab extension on a big store.

What it measures
================

A store is filled with ``--runs`` small runs (1 000 by default, three tasks each) and one
run of ``--tasks`` tasks (10 000: a map over a Ref, so the graph also grows at run time),
all made by nbflow itself.  A real ``jupyter server`` (its own process, 127.0.0.1, a
token) serves it; requests go through HTTP as the panel's do.

1. **List latency.**  ``GET /nbflow/api/runs?limit=50`` (the panel's first page, what it
   asks every second) and ``limit=500``, median and max over ``--repeat`` requests, and
   the first page filtered by name.  Target: the list renders within 1 s.
2. **Events throughput.**  Reading every journaled event of the 10k-task run through
   ``GET runs/{id}/events?after=N`` pages (the long-poll cursor), events per second.
   Target: at least 1 000 events/s.  Also the run view's ``GET runs/{id}/view`` (the
   widget's graph, grouped, drawn by the server) cold (first open, with layout) and warm.
3. **Watched vs unwatched.**  The same workflow (``--work`` thread tasks of ~1 ms of
   pure-Python work, 4 workers) run in a separate process, ``--rounds`` times per
   configuration, alternated: *unwatched* (nobody reads), *watched* (a separate client
   process follows it as the run view does: events long-poll plus the view at most 4 times
   a second), and *no cancel watcher* (``NBFLOW_CANCEL_WATCH=0``, what the watcher thread
   in the run's process costs).  Reported: median run time (the run's own duration from
   the journal), median CPU time of the run's process during ``wf.run`` (less sensitive to
   other load on the machine), and the ratios.  Target: watched / unwatched <= 1.05.
4. **Browser (optional, ``--browser``).**  Chromium (Playwright) opens JupyterLab's run
   view of a live ``--live-tasks`` run and samples how often the view redraws while the
   run goes.  Target: at most 10 UI updates a second, with the view keeping up with the
   events (the final view shows every task done).

Output: one JSON document on stdout (``--json OUT`` also writes it).

Command: ``.venv/bin/python benchmarks/dashboard.py --browser --json benchmarks/dashboard.json``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import dashboard_harness as dh

FILL = """
import sys
import nbflow as nf

@nf.task
def a(i):
    return i

@nf.task
def b(x):
    return x + 1

@nf.task
def items(n):
    return list(range(n))

@nf.task
def one(x):
    return x

@nf.task
def total(xs):
    return len(xs)

runs, tasks = int(sys.argv[1]), int(sys.argv[2])
with nf.Workflow("big") as wf:
    total(one.map(items(tasks - 3)))
print(wf.run(cache=False).id, flush=True)
for i in range(runs):
    with nf.Workflow(f"small-{i % 10}") as wf:
        b(b(a(i)))
    wf.run(cache=False)
"""

WORK = """
import sys
import time
import nbflow as nf

@nf.task
def work(i):
    s = 0
    for k in range(12_000):  # ~1 ms of pure-Python work holding the GIL
        s += k * i
    return s

@nf.task
def sink(xs):
    return len(xs)

with nf.Workflow("bench-work") as wf:
    sink(work.map(list(range(int(sys.argv[1])))))
cpu0 = time.process_time()
run = wf.run(workers=4, cache=False)
print(time.process_time() - cpu0, run.id, flush=True)
"""

FOLLOW = """
import sys, time, requests
base, token = sys.argv[1], sys.argv[2]
h = {"Authorization": f"token {token}"}
api = base + "/nbflow/api/"
deadline = time.monotonic() + 120
rid = None
while rid is None and time.monotonic() < deadline:
    got = requests.get(api + "runs?status=running&name=bench-work&limit=1", headers=h).json()["runs"]
    rid = got[0]["id"] if got else None
    if rid is None:
        time.sleep(0.05)
print("FOLLOWING", rid, flush=True)
cursor, last_view = 0, 0.0
while True:
    ev = requests.get(api + f"runs/{rid}/events?after={cursor}&timeout=5", headers=h).json()
    cursor = ev["last"]
    if time.monotonic() - last_view >= 0.25:  # the run view redraws at most 4 times a second
        requests.get(api + f"runs/{rid}/view", headers=h)
        last_view = time.monotonic()
    if not ev["live"]:
        break
requests.get(api + f"runs/{rid}/view", headers=h)
print("DONE", cursor, flush=True)
"""


def fill_store(tmp: Path, home: Path, runs: int, tasks: int) -> str:
    (tmp / "fill.py").write_text(textwrap.dedent(FILL))
    env = dict(os.environ, NBFLOW_HOME=str(home))
    out = subprocess.run([sys.executable, str(tmp / "fill.py"), str(runs), str(tasks)], env=env, cwd=tmp,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[0]


def timed_get(s: requests.Session, url: str) -> tuple[float, requests.Response]:
    t0 = time.perf_counter()
    r = s.get(url, timeout=120)
    r.raise_for_status()
    return time.perf_counter() - t0, r


def bench_list(s: requests.Session, server: dh.Server, repeat: int) -> dict:
    out = {}
    for label, path in (("page50", "runs?limit=50"), ("page500", "runs?limit=500"),
                        ("page50_by_name", "runs?limit=50&name=small-3"), ("running", "runs?status=running")):
        times = []
        for _ in range(repeat):
            dt, r = timed_get(s, server.url(path))
            times.append(dt)
        out[label] = {"median_ms": 1000 * statistics.median(times), "max_ms": 1000 * max(times),
                      "total": r.json()["total"], "rows": len(r.json()["runs"])}
    return out


def bench_events(s: requests.Session, server: dh.Server, rid: str) -> dict:
    t0 = time.perf_counter()
    cursor, n, pages = 0, 0, 0
    while True:
        r = s.get(server.url(f"runs/{rid}/events?after={cursor}&limit=5000&timeout=0"), timeout=120).json()
        n += len(r["events"])
        pages += 1
        cursor = r["last"]
        if not r["more"]:
            break
    dt = time.perf_counter() - t0
    cold, view = timed_get(s, server.url(f"runs/{rid}/view"))
    warm = [timed_get(s, server.url(f"runs/{rid}/view"))[0] for _ in range(5)]
    dd, detail = timed_get(s, server.url(f"runs/{rid}"))
    v = view.json()
    return {"events": n, "pages": pages, "seconds": dt, "events_per_s": n / dt,
            "view_cold_ms": 1000 * cold, "view_warm_ms": 1000 * statistics.median(warm),
            "view_nodes": v["svg"].count('class="nbflow-node"'), "view_tasks": v["tasks"],
            "detail_ms": 1000 * dd, "detail_bytes": len(detail.content)}


def run_duration(home: Path, rid: str) -> float:
    import sqlite3

    db = sqlite3.connect(f"file:{home / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        return float(db.execute("SELECT duration_s FROM runs WHERE id = ?", (rid,)).fetchone()[0])
    finally:
        db.close()


def bench_watched(tmp: Path, server: dh.Server, work: int, rounds: int) -> dict:
    (tmp / "work.py").write_text(textwrap.dedent(WORK))
    (tmp / "follow.py").write_text(textwrap.dedent(FOLLOW))
    times: dict[str, list[float]] = {"unwatched": [], "watched": [], "no_cancel_watcher": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    for _ in range(rounds):
        for mode in times:
            env = dict(os.environ, NBFLOW_HOME=str(server.home))
            if mode == "no_cancel_watcher":
                env["NBFLOW_CANCEL_WATCH"] = "0"
            follower = None
            if mode == "watched":
                cmd = [sys.executable, str(tmp / "follow.py"), server.base, server.token]
                follower = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            out = subprocess.run([sys.executable, str(tmp / "work.py"), str(work)], env=env, cwd=tmp,
                                 capture_output=True, text=True, check=True)
            cpu_s, rid = out.stdout.strip().splitlines()[-1].split()
            if follower is not None:
                fout, _ = follower.communicate(timeout=120)
                assert f"FOLLOWING {rid}" in fout, fout  # it followed this very run, to the end
            times[mode].append(run_duration(server.home, rid))
            cpu[mode].append(float(cpu_s))
    med = {k: statistics.median(v) for k, v in times.items()}
    mcpu = {k: statistics.median(v) for k, v in cpu.items()}
    return {"work_tasks": work, "rounds": rounds, "median_s": med, "all_s": times,
            "median_cpu_s": mcpu, "all_cpu_s": cpu,
            "watched_over_unwatched": med["watched"] / med["unwatched"],
            "unwatched_over_no_cancel_watcher": med["unwatched"] / med["no_cancel_watcher"],
            "cpu_watched_over_unwatched": mcpu["watched"] / mcpu["unwatched"],
            "cpu_unwatched_over_no_cancel_watcher": mcpu["unwatched"] / mcpu["no_cancel_watcher"]}


LIVE = """
import sys, time
import nbflow as nf

@nf.task
def items(n):
    return list(range(n))

@nf.task
def tick(i):
    time.sleep(0.002)
    return i

@nf.task
def total(xs):
    return len(xs)

with nf.Workflow("live-10k") as wf:
    total(tick.map(items(int(sys.argv[1]))))
run = wf.run(workers=8, cache=False)
print(run.id, run.duration_s, flush=True)
"""


def bench_browser(tmp: Path, home: Path, live_tasks: int) -> dict:
    from playwright.sync_api import sync_playwright

    (tmp / "live.py").write_text(textwrap.dedent(LIVE))
    with dh.jupyter(tmp, home, lab=True) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                                          "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{server.base}/lab?token={server.token}", wait_until="domcontentloaded")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.commands.hasCommand"
                                   "('nbflow:open-runs')", timeout=120_000)
            page.evaluate("async () => { await window.jupyterapp.restored;"
                          " await window.jupyterapp.commands.execute('nbflow:open-runs'); }")
            t0 = time.perf_counter()
            page.wait_for_selector("#nbflow-runs li.nbflow-run", timeout=60_000)
            list_render_s = time.perf_counter() - t0
            n_items = page.locator("#nbflow-runs li.nbflow-run").count()
            env = dict(os.environ, NBFLOW_HOME=str(home))
            proc = subprocess.Popen([sys.executable, str(tmp / "live.py"), str(live_tasks)], env=env, cwd=tmp,
                                    stdout=subprocess.PIPE, text=True)
            item = page.locator("#nbflow-runs li.nbflow-run[data-status='running']").first
            item.wait_for(timeout=60_000)
            item.click()
            page.wait_for_selector(".nbflow-RunView[data-redraws]", timeout=60_000)
            samples = []
            while True:
                st = page.evaluate("() => { const v = document.querySelector('.nbflow-RunView');"
                                   " return [v.dataset.status, Number(v.dataset.redraws)]; }")
                samples.append((time.perf_counter(), st[1]))
                if st[0] != "running":
                    break
                page.wait_for_timeout(200)
            out, _ = proc.communicate(timeout=120)
            progress = "document.querySelector('.nbflow-RunView .nbflow-progress')"
            all_done = f"() => {progress} && {progress}.dataset.done === {progress}.dataset.total"
            page.wait_for_function(all_done, timeout=60_000)
            done = page.evaluate(f"() => {progress}.dataset.done")
            span = samples[-1][0] - samples[0][0]
            pairs = zip(samples, samples[5:], strict=False)  # windows of about one second
            per_s = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in pairs if b[0] > a[0]]
            rid, dur = out.split()[:2]
            n_events = requests.get(server.url(f"runs/{rid}"), timeout=60).json()["run"]["last_seq"]
            return {"list_render_s": list_render_s, "list_items": n_items, "live_tasks": live_tasks,
                    "run_s": float(dur), "events": n_events, "events_per_s_of_run": n_events / float(dur),
                    "observed_s": span, "redraws": samples[-1][1] - samples[0][1],
                    "redraws_per_s": (samples[-1][1] - samples[0][1]) / span if span else None,
                    "max_redraws_per_s_1s_window": max(per_s) if per_s else None, "final_done": int(done)}
        finally:
            browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--work", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--browser", action="store_true")
    ap.add_argument("--live-tasks", type=int, default=10_000)
    ap.add_argument("--json")
    args = ap.parse_args()
    result: dict = {"args": vars(args)}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        home = tmp / "store"
        t0 = time.perf_counter()
        rid = fill_store(tmp, home, args.runs, args.tasks)
        result["fill_s"] = time.perf_counter() - t0
        with dh.jupyter(tmp, home) as server:
            s = requests.Session()
            s.headers["Authorization"] = f"token {server.token}"
            result["list"] = bench_list(s, server, args.repeat)
            result["events"] = bench_events(s, server, rid)
            result["watched"] = bench_watched(tmp, server, args.work, args.rounds)
        if args.browser:
            (tmp / "b").mkdir()
            result["browser"] = bench_browser(tmp / "b", home, args.live_tasks)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
