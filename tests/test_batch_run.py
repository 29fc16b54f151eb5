"""``nbflow run``: real subprocesses of the CLI running real kernels (papermill).

Covers exit codes and the failing cell's traceback, parameters injected (parsed as papermill
parses them) and recorded, run-level defaults reaching the kernel's runs, outputs recorded and
read back, a parameter in the cache key of exactly the tasks that use it, ``--resume``, and
SIGTERM stopping the kernel with the batch and its workflow run recorded as cancelled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from batch_helpers import CLI, cli, query, write_notebook

import nbflow as nf

PARAMS = (
    'import nbflow as nf\nalpha = nf.param("alpha", 0.1)\n'
    'n = nf.param("n", 3)\nlabel = nf.param("label", "x")'
)
TASKS = """
import pandas as pd

@nf.task
def load(n):
    return list(range(n))

@nf.task
def scale(xs):
    return [x * alpha for x in xs]

@nf.task
def count(xs):
    return len(xs)
"""
FLOW = "%%workflow demo\nxs = load(n)\nys = scale(xs)\nc = count(xs)"
OUTS = (
    'nf.output("total", sum(ys))\nnf.output("frame", pd.DataFrame({"y": ys}))\n'
    'r = nf.last_run()\nprint("options", r.workers, r.cache)'
)


def _nb(tmp_path: Path) -> Path:
    return write_notebook(tmp_path / "p.ipynb", [TASKS, FLOW, OUTS], parameters=PARAMS)


def _batch(batch_id: str) -> dict:
    cols = ("id", "status", "parameters", "error", "output")
    row = query(f"SELECT {', '.join(cols)} FROM batches WHERE id = ?", (batch_id,))
    assert row, f"no batch row {batch_id}"
    out = dict(zip(cols, row[0], strict=True))
    out["parameters"] = json.loads(out["parameters"])
    return out


def _tasks(run_id: str) -> dict[str, tuple[str, int, str]]:
    rows = query(
        "SELECT key, state, cached, reason FROM task_runs WHERE run_id = ? AND state != 'retried'", (run_id,)
    )
    return {k: (s, c, r) for k, s, c, r in rows}


def test_run_injects_records_and_applies_run_defaults(tmp_path: Path) -> None:
    nb = _nb(tmp_path)
    res = cli(
        "run",
        str(nb),
        "-p",
        "alpha",
        "0.5",
        "-p",
        "n",
        "4",
        "-r",
        "label",
        "7",
        "-o",
        "out.ipynb",
        "--workers",
        "2",
        "--no-cache",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    batch_id = res.stdout.strip().splitlines()[-1]
    assert "[nbflow run] p.ipynb: cell" in res.stderr  # progress on the terminal
    assert "[nbflow] completed: demo" in res.stderr  # the kernel's own progress lines

    b = _batch(batch_id)
    assert b["status"] == "completed"
    assert b["parameters"] == {"alpha": 0.5, "n": 4, "label": "7"}  # float, int, raw string
    runs = [r for (r,) in query("SELECT run_id FROM batch_runs WHERE batch_id = ?", (batch_id,))]
    assert len(runs) == 1
    (workers,) = query("SELECT workers FROM runs WHERE id = ?", (runs[0],))[0]
    assert workers == 2  # --workers reached %%workflow
    assert {r for _, _, r in _tasks(runs[0]).values()} == {"cache off"}  # --no-cache reached it
    params = dict(query("SELECT name, value FROM run_params WHERE run_id = ?", (runs[0],)))
    assert {k: json.loads(v) for k, v in params.items()} == {"alpha": 0.5, "n": 4, "label": "7"}

    out = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in out.cells)
    assert "options 2 False" in "".join(o.get("text", "") for c in out.cells for o in c.get("outputs", []))

    values = nf.outputs(batch_id)
    assert values["total"] == pytest.approx(0.5 * (0 + 1 + 2 + 3))
    assert list(values["frame"]["y"]) == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert nf.outputs(runs[0])["total"] == values["total"]  # also found by the workflow run's id

    listed = cli("outputs", batch_id[:12], cwd=tmp_path)
    assert listed.returncode == 0 and "total" in listed.stdout and "frame" in listed.stdout
    table = cli("runs", cwd=tmp_path)
    assert "alpha=0.5" in table.stdout and "n=4" in table.stdout
    as_json = json.loads(cli("runs", "--json", cwd=tmp_path).stdout)
    assert as_json[0]["params"] == {"alpha": 0.5, "n": 4, "label": "7"}  # newest first
    assert as_json[0]["batch"] == batch_id


def test_changed_parameter_reruns_only_its_tasks_and_resume_reuses_everything(tmp_path: Path) -> None:
    nb = _nb(tmp_path)
    first = cli("run", str(nb), "-p", "alpha", "0.5", "-y", "n: 5", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = cli("run", str(nb), "-p", "alpha", "0.9", "-p", "n", "5", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    run2 = query("SELECT run_id FROM batch_runs WHERE batch_id = ?", (second.stdout.split()[-1],))[0][0]
    t = _tasks(run2)
    assert t["load-0"][1] == 1 and t["count-0"][1] == 1  # do not use alpha: served from the cache
    assert t["scale-0"][1] == 0  # uses alpha: ran again
    assert "alpha" in t["scale-0"][2] or "global" in t["scale-0"][2], t["scale-0"]

    resumed = cli("run", str(nb), "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    b = _batch(resumed.stdout.split()[-1])
    assert b["parameters"] == {"alpha": 0.9, "n": 5}  # the last batch's parameters
    run3 = query("SELECT run_id FROM batch_runs WHERE batch_id = ?", (b["id"],))[0][0]
    assert all(c == 1 for _, c, _ in _tasks(run3).values())  # nothing redone


FAILING = """
import nbflow as nf

@nf.task
def parse(rows):
    for i, r in enumerate(rows):
        if r < 0:
            raise ValueError(f"bad row {i}: {r}")
    return rows
"""


def test_failing_notebook_exits_nonzero_with_the_cells_traceback(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "f.ipynb", [FAILING, "%%workflow broken\nout = parse([1, 2, -5])", "print('never')"]
    )
    res = cli("run", str(nb), "-o", "f.out.ipynb", cwd=tmp_path)
    assert res.returncode == 1
    err = res.stderr
    assert "cell 2 of" in err and "ValueError: bad row 2: -5" in err
    assert 'raise ValueError(f"bad row {i}: {r}")' in err  # the user's own line is in the traceback
    assert (tmp_path / "f.out.ipynb").exists()  # the output notebook is written anyway
    (batch_id,) = query("SELECT id FROM batches")[0]
    b = _batch(batch_id)
    assert b["status"] == "failed" and "bad row 2" in b["error"]
    (status,) = query("SELECT r.status FROM runs r JOIN batch_runs b ON b.run_id = r.id")[0]
    assert status == "failed"


def test_a_dying_kernel_is_reported_with_its_cell(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "die.ipynb", ["x = 1", "import os\nos._exit(3)", "print('never')"])
    res = cli("run", str(nb), cwd=tmp_path)
    assert res.returncode == 1
    assert "cell 2 of" in res.stderr and "DeadKernelError" in res.stderr
    (status, error) = query("SELECT status, error FROM batches")[0]
    assert status == "failed" and "DeadKernelError" in error
    assert (tmp_path / "die.out.ipynb").exists()


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    res = cli("run", str(tmp_path / "missing.ipynb"), cwd=tmp_path)
    assert res.returncode == 2 and "no notebook" in res.stderr and "missing.ipynb" in res.stderr


SLOW = """
import asyncio
import nbflow as nf

@nf.task
async def wait_long(i):
    await asyncio.sleep(300)
    return i
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_signal_stops_the_kernel_and_records_the_batch_as_cancelled(tmp_path: Path, sig: int) -> None:
    nb = write_notebook(
        tmp_path / "slow.ipynb",
        [SLOW, "%%workflow slow\nx = [wait_long(i) for i in range(3)]", "print('after')"],
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*CLI, "run", str(nb), "-o", "slow.out.ipynb"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        rows: list = []
        while time.monotonic() < deadline and not rows:  # until the workflow run is under way
            if (Path(os.environ["NBFLOW_HOME"]) / "journal.sqlite").exists():
                rows = query("SELECT r.id, r.pid FROM runs r WHERE r.status = 'running'")
            if not rows:
                time.sleep(0.3)
            assert proc.poll() is None, proc.communicate()
        assert rows, "the workflow run never started"
        run_id, kernel_pid = rows[0]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    (batch_id,) = query("SELECT id FROM batches")[0]
    b = _batch(batch_id)
    assert b["status"] == "cancelled" and "SIGTERM" in b["error"]
    assert query("SELECT status FROM runs WHERE id = ?", (run_id,))[0][0] == "cancelled"
    assert (tmp_path / "slow.out.ipynb").exists()
    out = nbformat.read(str(tmp_path / "slow.out.ipynb"), as_version=4)
    assert "after" not in json.dumps([c.get("outputs", []) for c in out.cells])  # no further cell ran
    assert not psutil.pid_exists(kernel_pid) or psutil.Process(kernel_pid).status() == psutil.STATUS_ZOMBIE
