"""The batch subcommands of ``nbflow``: run, sweep, outputs, report, show, explain.

``nbflow.cli`` builds the parser and hands these commands here.  Parameters are parsed as
papermill's own command line parses them (``-p`` values through papermill's type
resolution, ``-r`` as raw strings, ``-f`` a YAML file, ``-y`` a YAML string).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

COMMANDS = ("run", "sweep", "outputs", "report", "show", "explain")


def _param_options(p: argparse.ArgumentParser, *, multi: bool) -> None:
    if multi:
        p.add_argument(
            "-p",
            "--parameters",
            nargs="+",
            action="append",
            default=[],
            metavar=("NAME", "VALUE"),
            help="a parameter and its values (one run per combination)",
        )
    else:
        p.add_argument(
            "-p",
            "--parameters",
            nargs=2,
            action="append",
            default=[],
            metavar=("NAME", "VALUE"),
            help="a parameter, its value parsed as papermill does (int, float, bool, None, str)",
        )
        p.add_argument(
            "-r",
            "--parameters-raw",
            nargs=2,
            action="append",
            default=[],
            metavar=("NAME", "VALUE"),
            help="a parameter whose value is kept as a string",
        )
        p.add_argument(
            "-y",
            "--parameters-yaml",
            action="append",
            default=[],
            metavar="YAML",
            help="parameters as a YAML string",
        )
    p.add_argument(
        "-f",
        "--parameters-file",
        action="append",
        default=[],
        metavar="FILE",
        help="parameters from a YAML file",
    )


HOME_HELP = ("the store directory (default: $NBFLOW_HOME, else the nearest .nbflow/ here or "
             "above, else a new one at the project root)")


def _run_options(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    p.add_argument("--kernel", "-k", help="the kernel to run the notebook in (default: the notebook's)")
    if sweep:  # a sweep's --workers is how many notebooks run at once
        p.add_argument("--workers", type=int, metavar="N", help="points (notebooks) run at once (default 1)")
        p.add_argument(
            "--task-workers", type=int, metavar="N", help="default workers= of each notebook's runs"
        )
    else:
        p.add_argument("--workers", type=int, help="default workers= for the notebook's workflow runs")
    p.add_argument(
        "--backend",
        help="default backend= for the notebook's workflow runs (local, process, dask, tcp://...)",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="the notebook's workflow runs do not use the cache"
    )
    p.add_argument("--rerun", nargs="+", metavar="TASK", help="tasks to run again even if cached")
    p.add_argument(
        "--no-lease",
        action="store_true",
        help="the notebook's workflow runs take and wait for no cache leases (NBFLOW_LEASE=off "
        "in the kernel; a run's own lease=True wins)",
    )
    p.add_argument(
        "--lease-ttl",
        type=float,
        metavar="S",
        help="seconds a lease of the notebook's runs stays valid without a heartbeat "
        "(NBFLOW_LEASE_TTL in the kernel, default 30; a run's own lease_ttl= wins)",
    )
    p.add_argument("--timeout", type=float, metavar="S", help="fail a cell that runs longer than S seconds")
    p.add_argument("--cwd", help="working directory of the kernel (default: this one)")
    p.add_argument("--log-output", action="store_true", help="print everything the notebook prints")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    p.add_argument("--home", help=HOME_HELP)


def add_parsers(sub: Any) -> None:
    """Add the batch subcommands to the ``nbflow`` parser's subparsers."""
    r = sub.add_parser("run", help="run a notebook as a batch run (papermill)", description=(
        "Run a notebook headless in its own kernel (papermill) as a batch run recorded in the "
        "store: parameters are injected into the cell tagged 'parameters', run options become the "
        "defaults of the notebook's workflow runs, and the batch id is printed when it completes. "
        "Exit status 0 completed, 1 a cell failed, 2 bad usage, 130/143 stopped by a signal."))
    r.add_argument("notebook", help="the .ipynb to run")
    r.add_argument("-o", "--output", help="the executed notebook (default: NOTEBOOK.out.ipynb)")
    _param_options(r, multi=False)
    _run_options(r)
    r.add_argument(
        "--resume",
        action="store_true",
        help="run again with the last batch run's parameters; cached tasks are not redone",
    )
    r.add_argument("--batch-id", help=argparse.SUPPRESS)  # set by sweeps and nf.notebook
    r.add_argument("--kind", default="notebook", help=argparse.SUPPRESS)
    r.add_argument("--parent", help=argparse.SUPPRESS)
    r.add_argument("--params-json", help=argparse.SUPPRESS)  # exact parameters (sweeps, nf.notebook)

    s = sub.add_parser("sweep", help="run a notebook once per combination of parameter values",
                       description=(
        "Run a notebook once per combination of parameter values (-p NAME V1 V2 ...) or per row of "
        "a CSV (--from), each point a separate `nbflow run`, --workers at once; then write and print "
        "one row per point (status, parameters, duration, outputs) to OUT_DIR/sweep.csv. "
        "Exit status 0 if every point completed, else 1."))
    s.add_argument("notebook", help="the .ipynb to run")
    _param_options(s, multi=True)
    s.add_argument(
        "--from", dest="from_csv", metavar="CSV", help="one run per row of this CSV (columns = parameters)"
    )
    s.add_argument(
        "--out-dir", help="where the executed notebooks and sweep table go (default: NOTEBOOK.sweep/)"
    )
    _run_options(s, sweep=True)

    o = sub.add_parser("outputs", help="the outputs a batch run or workflow run recorded (nf.output)",
                       description=(
        "Print the values a batch run or workflow run recorded with nf.output: name, type, size "
        "and a preview (--json: JSON records). Exit status 1 when it recorded none."))
    o.add_argument("run", help="a batch id or workflow run id")
    o.add_argument("--json", action="store_true", help="print JSON records")
    o.add_argument("--home", help=HOME_HELP)

    rep = sub.add_parser("report", help="write a self-contained HTML report of a run", description=(
        "Write a self-contained HTML report of a workflow run or batch run (summary, parameters, "
        "graph, timeline, metrics, tasks, errors) to one file, and print its path."))
    rep.add_argument("run", help="a workflow run id or batch id (a unique prefix is enough)")
    rep.add_argument("--html", metavar="OUT.html", help="the file to write (default: nbflow-report-RUN.html)")
    rep.add_argument("--home", help=HOME_HELP)

    sh = sub.add_parser("show", help="a run's summary and tasks, as text", description=(
        "Print a workflow run's (or batch run's) summary, per-task table and errors as text."))
    sh.add_argument("run", help="a workflow run id or batch id")
    sh.add_argument("--home", help=HOME_HELP)

    ex = sub.add_parser("explain", help="why a task of a run ran or was served from the cache",
                        description=(
        "Say why a task of a run ran or was served from the cache: its code, inputs and cache "
        "key against the run it was compared with. A task name explains each of its calls."))
    ex.add_argument("run", help="a workflow run id")
    ex.add_argument("task", help="a task key (e.g. clean-0) or task name")
    ex.add_argument("--home", help=HOME_HELP)


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The parameters of ``nbflow run``, parsed as papermill's command line parses them."""
    import yaml
    from papermill.cli import _resolve_type
    from papermill.iorw import NoDatesSafeLoader, read_yaml_file

    out: dict[str, Any] = {}
    for f in args.parameters_file:
        out.update(read_yaml_file(f) or {})
    for y in getattr(args, "parameters_yaml", []):
        out.update(yaml.load(y, Loader=NoDatesSafeLoader) or {})
    for name, value in args.parameters if not isinstance(args.parameters, dict) else []:
        out[name] = _resolve_type(value)
    for name, value in getattr(args, "parameters_raw", []):
        out[name] = value
    if getattr(args, "params_json", None):
        out.update(json.loads(args.params_json))
    return out


def _home(args: argparse.Namespace) -> None:
    if getattr(args, "home", None):
        import os

        os.environ["NBFLOW_HOME"] = args.home


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import BatchOptions, run_notebook

    _home(args)
    opts = BatchOptions(
        notebook=args.notebook,
        output=args.output,
        parameters=parameters(args),
        kernel=args.kernel,
        workers=args.workers,
        backend=args.backend,
        no_cache=args.no_cache,
        rerun=args.rerun,
        no_lease=args.no_lease,
        lease_ttl=args.lease_ttl,
        timeout=args.timeout,
        resume=args.resume,
        cwd=args.cwd,
        log_output=args.log_output,
        quiet=args.quiet,
        batch_id=args.batch_id,
        kind=args.kind,
        parent=args.parent,
    )
    result = run_notebook(opts)
    if result.status == "failed":
        where = f"cell {result.cell + 1}" if result.cell is not None else "the notebook"
        print(f"\nnbflow run: {where} of {args.notebook} failed: {result.error}\n", file=sys.stderr)
        if result.traceback:
            print(result.traceback, file=sys.stderr)
        print(
            f"\nnbflow run: the output notebook is {result.output} (batch {result.batch_id})", file=sys.stderr
        )
        if result.kernel_log is not None:
            print(f"nbflow run: the kernel's own output is in {result.kernel_log}", file=sys.stderr)
    elif result.status == "cancelled":
        print(
            f"nbflow run: cancelled ({result.error}); batch {result.batch_id}, output {result.output}",
            file=sys.stderr,
        )
    else:
        print(result.batch_id)
    return result.exit_code


def main(args: argparse.Namespace) -> int:
    """Run one batch subcommand."""
    if args.command == "run":
        return cmd_run(args)
    if args.command == "sweep":
        from .sweep import cmd_sweep

        return cmd_sweep(args)
    if args.command == "outputs":
        return cmd_outputs(args)
    if args.command in ("report", "show", "explain"):
        from . import views

        return getattr(views, f"cmd_{args.command}")(args)
    return 2  # pragma: no cover


def cmd_outputs(args: argparse.Namespace) -> int:
    from .outputs import output_rows

    rows = output_rows(args.run, home=args.home)
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    if not rows:
        print(f"no outputs recorded for {args.run}")
        return 1
    import pandas as pd

    df = pd.DataFrame(rows)[["name", "type", "size", "preview"]]
    print(df.to_string(index=False))
    return 0


def with_params(df: Any, home: Any = None) -> Any:
    """``nbflow runs``' frame with a ``params`` column (each run's parameters) and its batch."""
    from . import records

    store = records.require_store(home)
    params = records.params_of_runs(store)
    batch_of = records.batch_of_runs(store)
    df = df.copy()
    df["params"] = [params.get(r, {}) for r in df["id"]]
    df["batch"] = [batch_of.get(r) for r in df["id"]]
    return df
