"""The dashboard's REST API (``/nbflow/api/``) against a real Jupyter server subprocess.

The server runs on 127.0.0.1 with a token and reads a store that other processes write:
runs are made by workflow scripts in their own processes, never by the server.  Covered:
authentication (no token, wrong token: 403 and no data), XSRF on POST with cookie login,
bad ids and path tricks (4xx, nothing read), filters and paging of the runs list, one
run's detail, the events cursor and its long-poll, the graph view, the report stub, and a
cancel that reaches a run in another process, which then ends ``cancelled`` in the store.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dashboard_harness as dh

requests = pytest.importorskip("requests")
pytest.importorskip("jupyter_server")

POPULATE = """
import json
import nbflow as nf

@nf.task
def load(n):
    return list(range(n))

@nf.task
def square(xs):
    return [x * x for x in xs]

@nf.task
def total(parts):
    return sum(sum(p) for p in parts)

@nf.task
def explode(xs):
    raise ValueError("bad row 7")

@nf.task
def tiny(i):
    return i

ids = {}
with nf.Workflow("etl") as wf:
    out = total([square(load(n)) for n in (3, 4, 5)])
ids["etl"] = wf.run().id
with nf.Workflow("broken") as wf:
    bad = explode(load(10))
    good = square(load(2))
ids["broken"] = wf.run(raise_on_error=False).id
ids["many"] = []
for i in range(12):
    with nf.Workflow("many") as wf:
        tiny(i)
    ids["many"].append(wf.run().id)
print(json.dumps(ids))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("dash")
    home = tmp / "store"
    p = dh.script(tmp, home, POPULATE, "populate.py")
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out.decode()
    ids = json.loads(out.decode().strip().splitlines()[-1])
    with dh.jupyter(tmp, home) as server:
        yield server, ids, tmp


def get(server: dh.Server, path: str, **kw):
    return requests.get(server.url(path), timeout=60, **kw)


def test_extension_is_enabled_by_the_install() -> None:
    bindir = Path(sys.executable).parent
    out = subprocess.run([str(bindir / "jupyter"), "server", "extension", "list"], capture_output=True,
                         text=True, timeout=120)
    text = out.stdout + out.stderr
    assert "nbflow.server" in text and "enabled" in text.split("nbflow.server", 1)[1][:40]
    out = subprocess.run([str(bindir / "jupyter"), "labextension", "list"], capture_output=True, text=True,
                         timeout=120)
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip().startswith("nbflow ")]
    assert lines and "enabled" in lines[0] and "OK" in lines[0], out.stdout + out.stderr


@pytest.mark.parametrize("path", ["runs", "runs/{etl}", "runs/{etl}/events", "runs/{etl}/view"])
def test_no_token_no_data(env, path: str) -> None:
    server, ids, _ = env
    path = path.format(etl=ids["etl"])
    for url in (server.url(path, token=False), server.url(path, token=False) + "?token=wrong"):
        r = requests.get(url, timeout=30)
        assert r.status_code == 403, (url, r.status_code)
        assert ids["etl"] not in r.text and "etl" not in r.text
    r = requests.get(server.url(path, token=False), headers={"Authorization": "token wrong"}, timeout=30)
    assert r.status_code == 403


def test_cancel_needs_a_token(env) -> None:
    server, ids, _ = env
    r = requests.post(server.url(f"runs/{ids['etl']}/cancel", token=False), timeout=30)
    assert r.status_code == 403


def test_post_with_cookie_login_needs_the_xsrf_token(env) -> None:
    server, ids, _ = env
    s = requests.Session()
    r = s.get(f"{server.base}/api/status?token={server.token}", timeout=30)  # logs in: sets the cookie
    assert r.status_code == 200
    s.get(f"{server.base}/login", timeout=30)  # the login page sets the _xsrf cookie
    assert "_xsrf" in s.cookies
    url = f"{server.base}/nbflow/api/runs/{ids['etl']}/cancel"
    r = s.get(f"{server.base}/nbflow/api/runs", timeout=30)
    assert r.status_code == 200  # the cookie alone authenticates reads
    r = s.post(url, timeout=30)
    assert r.status_code == 403 and "xsrf" in r.text.lower()
    r = s.post(url, headers={"X-XSRFToken": "forged"}, timeout=30)
    assert r.status_code == 403
    r = s.post(url, headers={"X-XSRFToken": s.cookies["_xsrf"]}, timeout=30)
    # past authentication and XSRF: refused only because that run has already ended
    assert r.status_code == 409 and "completed" in r.json()["message"]


def test_runs_newest_first_with_counts(env) -> None:
    server, ids, _ = env
    page = get(server, "runs?limit=500").json()
    runs = page["runs"]
    assert page["total"] == len(runs) == 14
    starts = [r["start"] for r in runs]
    assert starts == sorted(starts, reverse=True)
    assert runs[0]["id"] == ids["many"][-1] and runs[-1]["id"] == ids["etl"]
    etl = next(r for r in runs if r["id"] == ids["etl"])
    assert etl["status"] == "completed" and etl["tasks"] == 7 and etl["completed"] == 7 and etl["done"] == 7
    broken = next(r for r in runs if r["id"] == ids["broken"])
    assert broken["status"] == "failed" and broken["failed"] == 1 and broken["completed"] == 3


def test_runs_paging_covers_every_run_once(env) -> None:
    server, _, _ = env
    seen: list[str] = []
    for offset in range(0, 20, 5):
        page = get(server, f"runs?limit=5&offset={offset}").json()
        assert page["total"] == 14 and page["limit"] == 5 and page["offset"] == offset
        seen += [r["id"] for r in page["runs"]]
    assert len(seen) == len(set(seen)) == 14
    assert seen == [r["id"] for r in get(server, "runs?limit=50").json()["runs"]]


def test_runs_filters(env) -> None:
    server, ids, _ = env
    many = get(server, "runs?name=many").json()
    assert many["total"] == 12 and {r["name"] for r in many["runs"]} == {"many"}
    failed = get(server, "runs?status=failed").json()
    assert [r["id"] for r in failed["runs"]] == [ids["broken"]]
    assert get(server, "runs?status=running").json()["total"] == 0
    cut = get(server, "runs?name=many&limit=50").json()["runs"][5]["start"]
    since = get(server, f"runs?name=many&since={cut}").json()
    assert since["total"] == 6 and all(r["start"] >= cut for r in since["runs"])
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut - 3600)) + "Z"
    assert get(server, f"runs?since={iso}").json()["total"] == 14
    assert get(server, "runs?since=2999-01-01T00:00:00Z").json()["total"] == 0


@pytest.mark.parametrize("query,word", [("status=weird", "status"), ("limit=x", "limit"),
                                        ("limit=0", "limit"), ("offset=-1", "offset"),
                                        ("since=yesterday", "since")])
def test_bad_query_arguments_are_400_with_the_fix(env, query: str, word: str) -> None:
    server, _, _ = env
    r = get(server, f"runs?{query}")
    assert r.status_code == 400
    assert word in r.json()["message"]


def test_run_detail(env) -> None:
    server, ids, _ = env
    d = get(server, f"runs/{ids['broken']}").json()
    assert d["run"]["id"] == ids["broken"] and d["run"]["status"] == "failed"
    states = {t["key"]: t["state"] for t in d["tasks"]}
    assert states == {"load-0": "completed", "explode-0": "failed", "load-1": "completed",
                      "square-0": "completed"}
    keys = [t["key"] for t in d["tasks"]]
    assert sorted((keys[a], keys[b]) for a, b in d["edges"]) == [("load-0", "explode-0"),
                                                                   ("load-1", "square-0")]
    tb = d["errors"]["explode-0"]
    assert "ValueError: bad row 7" in tb and "Traceback" in tb and 'raise ValueError("bad row 7")' in tb
    # as in the notebook: the task's own frames, not the engine's in front of them
    assert "nbflow/engine" not in tb and tb.splitlines()[1].endswith("in explode")
    assert d["run"]["last_seq"] > 0


def test_view_draws_the_widget_graph(env) -> None:
    server, ids, _ = env
    v = get(server, f"runs/{ids['etl']}/view").json()
    assert v["status"] == "completed" and v["tasks"] == 7 and v["done"] == 7
    assert v["svg"].count('data-state="completed"') == 7 and "#bbf7d0" in v["svg"]  # the widget's green
    assert 'data-status="completed"' in v["progress"]


@pytest.mark.parametrize("raw", ["..%2Fjournal.sqlite", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e",
                                 "20260101-000000-zzzzzz", "2026", "x" * 300,
                                 "20260101-000000-abcdef%00", "20260101-000000-abcdef%27%20OR%201=1"])
@pytest.mark.parametrize("tail", ["", "/events", "/view", "/report"])
def test_bad_ids_are_refused_before_reading(env, raw: str, tail: str) -> None:
    server, ids, _ = env
    r = requests.get(f"{server.base}/nbflow/api/runs/{raw}{tail}?token={server.token}", timeout=30)
    assert 400 <= r.status_code < 500
    assert ids["etl"] not in r.text and "root:" not in r.text and "SQLite" not in r.text
    if r.status_code == 400:
        assert "is not a run id" in r.json()["message"]


def test_unknown_run_is_404(env) -> None:
    server, _, _ = env
    for tail in ("", "/events", "/view", "/report"):
        r = get(server, f"runs/20200101-000000-abcdef{tail}")
        assert r.status_code == 404 and "no run 20200101-000000-abcdef" in r.json()["message"]
    r = requests.post(server.url("runs/20200101-000000-abcdef/cancel"), timeout=30)
    assert r.status_code == 404


def test_events_cursor(env) -> None:
    server, ids, _ = env
    rid = ids["etl"]
    first = get(server, f"runs/{rid}/events?after=0").json()
    seqs = [e["seq"] for e in first["events"]]
    assert seqs == list(range(1, len(seqs) + 1)) and first["last"] == seqs[-1]
    assert first["events"][0]["type"] == "RunStarted" and first["events"][-1]["type"] == "RunFinished"
    assert first["live"] is False and first["more"] is False
    later = get(server, f"runs/{rid}/events?after=5").json()
    assert [e["seq"] for e in later["events"]] == seqs[5:]
    # an ended run answers at once, with nothing after its last event
    t0 = time.monotonic()
    done = get(server, f"runs/{rid}/events?after={first['last']}&timeout=20").json()
    assert done["events"] == [] and done["last"] == first["last"] and time.monotonic() - t0 < 15
    paged = get(server, f"runs/{rid}/events?after=0&limit=4").json()
    assert [e["seq"] for e in paged["events"]] == [1, 2, 3, 4] and paged["more"] is True


def test_report_is_the_batch_rooms_html_report(env) -> None:
    server, ids, _ = env
    r = get(server, f"runs/{ids['etl']}/report")
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    assert ids["etl"] in r.text and "<svg" in r.text  # the run's own report, with its graph
    assert get(server, "runs/20990101-000000-abcdef/report").status_code == 404


def test_live_run_long_poll_and_cancel_from_another_process(env) -> None:
    server, _, tmp = env
    proc = dh.script(tmp, server.home, dh.LONG_RUN, "long.py")
    try:
        deadline = time.monotonic() + 120
        run = None
        while time.monotonic() < deadline and run is None:
            page = get(server, "runs?status=running&name=long").json()
            run = page["runs"][0] if page["runs"] else None
            time.sleep(0.2)
        assert run is not None and run["live"] and run["pid"] == proc.pid
        rid = run["id"]
        # long-poll: each answer brings events after the cursor, as the run makes them
        cursor, types = 0, []
        while len(types) < 3 * 2 + 1:
            got = get(server, f"runs/{rid}/events?after={cursor}&timeout=10").json()
            assert got["live"] and all(e["seq"] > cursor for e in got["events"])
            cursor = got["last"]
            types += [e["type"] for e in got["events"]]
        assert types[0] == "RunStarted" and "TaskCompleted" in types
        r = requests.post(server.url(f"runs/{rid}/cancel"), timeout=30)
        assert r.status_code == 202 and r.json() == {"run_id": rid, "requested": True}
        out, _ = proc.communicate(timeout=60)
        assert f"STATUS cancelled {rid}" in out.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    final = get(server, f"runs/{rid}").json()
    assert final["run"]["status"] == "cancelled" and final["run"]["live"] is False
    assert final["run"]["cancelled"] > 0 and final["run"]["completed"] < 301
    tail = get(server, f"runs/{rid}/events?after={cursor}&timeout=10").json()
    assert tail["events"][-1]["type"] == "RunFinished" and tail["events"][-1]["data"]["status"] == "cancelled"
    # a second cancel of an ended run is refused with the reason
    again = requests.post(server.url(f"runs/{rid}/cancel"), timeout=30)
    assert again.status_code == 409 and "cancelled" in again.json()["message"]
