"""``nbflow sweep``: one batch run per combination of parameter values, outputs in one table.

``-p alpha 0.1 0.2 -p n 100 1000`` is the grid alpha x n (four points); ``--from
params.csv`` takes one point per row instead (its columns are the parameters); ``-f
base.yaml`` gives values shared by every point.  Each point is a separate ``nbflow run``
process (its own kernel, its own environment, so points never share state), at most
``--workers`` at once.  A point that fails does not stop the others.

The sweep has a batch row of its own (kind ``sweep``); each point's row names it as its
parent.  When every point has ended, one row per point — status, parameters, and every
output it recorded with ``nf.output`` (scalars as they are, anything else as a short
preview) — is written to ``sweep.csv`` (and ``sweep.parquet`` when pyarrow is installed)
in the output directory, and summarised on the terminal.  Exit status 0 when every point
completed, 1 when some failed, 130/143 when the sweep was stopped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..params import env
from . import paramcheck, records
from .runner import BatchError

SCALARS = (int, float, str, bool, type(None))


def grid(specs: list[list[str]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of ``-p NAME V1 V2 ...`` values (parsed as papermill parses them)."""
    from papermill.cli import _resolve_type

    axes = []
    for spec in specs:
        if len(spec) < 2:
            raise BatchError(
                f"-p {' '.join(spec)}: give a parameter name and at least one value, e.g. -p alpha 0.1 0.2"
            )
        axes.append([(spec[0], _resolve_type(v)) for v in spec[1:]])
    return [{**base, **dict(combo)} for combo in itertools.product(*axes)] if axes else [dict(base)]


def from_csv(path: str, base: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per row of a CSV file (its header names the parameters)."""
    import pandas as pd

    if not Path(path).is_file():
        raise BatchError(f"--from {path}: no such file; give a CSV whose columns are parameter names")
    df = pd.read_csv(path)
    bad = [c for c in df.columns if not str(c).isidentifier()]
    if bad:
        raise BatchError(f"--from {path}: columns {bad} are not parameter names (Python identifiers)")
    return [
        {**base, **{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}}
        for row in df.to_dict(orient="records")
    ]


def _point_command(
    args: argparse.Namespace, params: dict[str, Any], output: Path, batch_id: str, parent: str
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "nbflow.cli",
        "run",
        args.notebook,
        "-o",
        str(output),
        "-q",
        "--batch-id",
        batch_id,
        "--kind",
        "sweep-point",
        "--parent",
        parent,
        "--params-json",
        json.dumps(params, default=str),
    ]
    for flag, value in (
        ("--kernel", args.kernel),
        ("--workers", args.task_workers),
        ("--backend", args.backend),
        ("--timeout", args.timeout),
        ("--cwd", args.cwd),
        ("--lease-ttl", args.lease_ttl),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    if args.no_cache:
        cmd.append("--no-cache")
    if args.no_lease:
        cmd.append("--no-lease")
    if args.rerun:
        cmd += ["--rerun", *args.rerun]
    return cmd


def _cell(value: Any) -> Any:
    if isinstance(value, SCALARS):
        return value
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    from .outputs import _preview

    return _preview(value)


def cmd_sweep(args: argparse.Namespace) -> int:
    from .cli import _home, parameters

    _home(args)
    nb = Path(args.notebook)
    if not nb.is_file():
        raise BatchError(f"no notebook {args.notebook!r}: give the path of an .ipynb file")
    base = parameters(argparse.Namespace(parameters_file=args.parameters_file, parameters=[]))
    points = from_csv(args.from_csv, base) if args.from_csv else grid(args.parameters, base)
    for point in points[:1]:  # every point has the same names: a typo is refused once, up front
        paramcheck.check_parameters(nb, point)
    if args.workers is not None and args.workers < 1:
        raise BatchError(f"--workers {args.workers}: give at least 1 (notebooks run at once)")
    env.lease_env(no_lease=args.no_lease, lease_ttl=args.lease_ttl)  # refuse a bad --lease-ttl now
    out_dir = Path(args.out_dir or nb.with_suffix(".sweep"))
    out_dir.mkdir(parents=True, exist_ok=True)
    store = records.require_store()
    sweep_id = records.new_batch_id()
    records.start_batch(
        store,
        sweep_id,
        kind="sweep",
        notebook=str(nb.resolve()),
        output=str(out_dir.resolve()),
        parameters={"points": points},
        options={"workers": args.workers},
    )
    started = time.time()
    print(
        f"[nbflow sweep] {nb.name}: {len(points)} point(s), {args.workers or 1} at once, sweep {sweep_id}",
        file=sys.stderr,
        flush=True,
    )

    stop = threading.Event()
    procs: dict[int, subprocess.Popen[str]] = {}
    lock = threading.Lock()
    results: list[dict[str, Any]] = [{} for _ in points]

    def one(k: int) -> None:
        params = points[k]
        batch_id = records.new_batch_id()
        output = out_dir / f"{nb.stem}-{k:03d}.ipynb"
        row: dict[str, Any] = {"point": k, "batch": batch_id, "status": "not run", **params}
        results[k] = row
        if stop.is_set():
            return
        t0 = time.monotonic()
        proc = subprocess.Popen(
            _point_command(args, params, output, batch_id, sweep_id),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with lock:
            procs[k] = proc
        _, err = proc.communicate()
        with lock:
            procs.pop(k, None)
        b = records.batch(store, batch_id)
        row["status"] = b["status"] if b else ("failed" if proc.returncode else "completed")
        row["duration_s"] = round(time.monotonic() - t0, 3)
        row["output_notebook"] = str(output)
        if row["status"] == "failed":
            row["error"] = (b or {}).get("error") or err.strip().splitlines()[-1:]
        try:
            from .outputs import outputs

            for name, value in outputs(batch_id).items():
                row[name] = _cell(value)
        except Exception:  # a point that recorded nothing (or failed first) has no outputs
            pass
        print(
            f"[nbflow sweep] point {k} {params}: {row['status']} ({row['duration_s']} s)",
            file=sys.stderr,
            flush=True,
        )

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        with lock:
            for p in procs.values():
                p.send_signal(signal.SIGTERM)  # each point stops its kernel and records itself cancelled

    old = (
        {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        if threading.current_thread() is threading.main_thread()
        else {}
    )
    try:
        with ThreadPoolExecutor(max_workers=args.workers or 1, thread_name_prefix="nbflow-sweep") as pool:
            list(pool.map(one, range(len(points))))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    failed = sum(1 for r in results if r.get("status") != "completed")
    status = "cancelled" if stop.is_set() else ("failed" if failed else "completed")
    records.finish_batch(
        store,
        sweep_id,
        status,
        started,
        f"{failed} of {len(points)} points did not complete" if failed else None,
    )
    table = _write_table(results, out_dir)
    print(_summary(results), file=sys.stderr)
    print(table)
    if stop.is_set():
        return 143
    return 1 if failed else 0


def _write_table(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    import pandas as pd

    df = pd.DataFrame(rows)
    csv = out_dir / "sweep.csv"
    df.to_csv(csv, index=False)
    try:
        import pyarrow  # noqa: F401

        df.astype({c: str for c in df.columns if df[c].dtype == object}).to_parquet(out_dir / "sweep.parquet")
    except ImportError:
        pass
    return csv


def _summary(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    df = pd.DataFrame(rows)
    done = int((df["status"] == "completed").sum())
    show = df.drop(columns=[c for c in ("batch", "output_notebook") if c in df.columns])
    return f"{show.to_string(index=False)}\n[nbflow sweep] {done}/{len(df)} points completed"
