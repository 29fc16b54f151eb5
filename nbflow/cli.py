"""The ``nbflow`` command.

    nbflow runs [--name NAME] [--limit N] [--json] [--home DIR]
    nbflow gc [--keep-last N] [--max-age 7d] [--max-bytes 10GB] [--file-digest-age 30d|never]
              [--dry-run] [--grace SECONDS] [--home DIR]
    nbflow doctor [--repair] [--home DIR]
    nbflow run | sweep | outputs | report | show | explain ...   (batch runs: nbflow.batch.cli)

``runs`` lists the runs in the store (newest first); ``gc`` applies the retention rules
of :mod:`nbflow.store.gc`; ``doctor`` checks the store and with ``--repair`` starts a new
journal in place of a damaged one (:mod:`nbflow.store.doctor`).  The store is
``$NBFLOW_HOME``, else the nearest ``.nbflow/`` in the working directory or above it (else a
new one at the project root; :func:`nbflow.store.store_home`) unless ``--home`` says
otherwise.  Exit status: 0 on success, 2 on bad usage, 1 when the store cannot be used
(for ``doctor``: when it is damaged, or written by a newer nbflow, which ``--repair`` never
touches, or when ``--repair`` refused because other processes write to the store).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nbflow")
    except PackageNotFoundError:  # a checkout on sys.path that is not installed
        return "(not installed)"


HOME_HELP = ("the store directory (default: $NBFLOW_HOME, else the nearest .nbflow/ here or "
             "above, else a new one at the project root)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nbflow", description="nbflow: Jupyter-native workflows.")
    p.add_argument("--version", action="version", version=f"nbflow {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("runs", help="list the runs in the store", description=(
        "List the workflow runs recorded in the store, newest first: id, workflow name, status, "
        "start, duration, task counts and the parameters of batch runs."))
    r.add_argument("--name", help="only runs of this workflow")
    r.add_argument("--limit", type=int, default=50, help="show the N most recent (default 50; 0 = all)")
    r.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    r.add_argument("--home", help=HOME_HELP)

    g = sub.add_parser("gc", help="remove old runs and the stored results only they use", description=(
        "Remove old runs and the stored results only they use. A run is kept if --keep-last or "
        "--max-age keeps it (with neither, every run is kept); --max-bytes then drops the oldest "
        "kept runs until their results fit. The newest run and runs in progress are always kept. "
        "Remembered digests of nf.File inputs go when their file is gone or changed, or unused "
        "for --file-digest-age (default 30d)."))
    g.add_argument("--keep-last", type=int, metavar="N", help="keep the N most recent runs")
    g.add_argument("--max-age", metavar="AGE", help="keep runs younger than AGE (e.g. 7d, 12h, 30m), "
                   "and nf.File digests used within AGE")
    g.add_argument("--file-digest-age", metavar="AGE",
                   help="drop the remembered digests of nf.File inputs unused for AGE (default: "
                   "--max-age if given, else 30d; 'never' keeps them); a digest of a file that is "
                   "gone or changed always goes")
    g.add_argument("--max-bytes", metavar="SIZE",
                   help="then drop the oldest runs until their results fit (e.g. 10GB)")
    g.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    g.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="leave files without a journal row alone until this old (default 3600)")
    g.add_argument("--home", help=HOME_HELP)

    d = sub.add_parser("doctor", help="check the store; --repair starts a new journal if it is damaged",
                       description=(
        "Check the store: the journal's integrity, every result file's checksum, permissions. "
        "Changes nothing unless --repair is given. Exit status 1 when the store is damaged, "
        "or was written by a newer nbflow (upgrade nbflow to open it)."))
    d.add_argument("--repair", action="store_true",
                   help="move a damaged journal aside and start a new one, copying every readable "
                   "row and keeping the results; a store of a newer nbflow is never touched, nor "
                   "one that other processes have open for writing (they are named)")
    d.add_argument("--home", help=HOME_HELP)
    from .batch import cli as batch_cli  # run, sweep, outputs, report, show, explain

    batch_cli.add_parsers(sub)
    return p


def _cmd_runs(args: argparse.Namespace) -> int:
    from .store import runs, store_home

    where = Path(args.home).expanduser().absolute() if args.home else store_home()
    df = runs(args.name, home=args.home)
    if args.limit:
        df = df.head(args.limit)  # (newest first, as nf.runs() lists them)
    from .batch.cli import with_params

    df = with_params(df, args.home)
    # Where the store was found (walking up from here, or $NBFLOW_HOME); on stderr for --json.
    print(f"store: {where}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        out = df.assign(start=df["start"].astype(str), end=df["end"].astype(str))
        print(json.dumps(json.loads(out.to_json(orient="records")), indent=1))
        return 0
    if df.empty:
        print("no runs in the store")
        return 0
    view = df[["id", "name", "status", "start", "duration_s", "tasks", "completed", "cached", "failed",
               "skipped", "cancelled", "params"]].copy()
    from .batch.views import short_repr

    cells = [" ".join(f"{k}={short_repr(v)}" for k, v in p.items()) for p in view["params"]]
    view["params"] = [c if len(c) <= 100 else c[:97] + "..." for c in cells]  # one line a run
    view["start"] = view["start"].dt.tz_convert(None).dt.strftime("%Y-%m-%d %H:%M:%S")
    view["duration_s"] = view["duration_s"].round(2)
    print(view.to_string(index=False))
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    from .store import gc

    report = gc(keep_last=args.keep_last, max_age=args.max_age, max_bytes=args.max_bytes,
                file_digest_age=args.file_digest_age, dry_run=args.dry_run, grace=args.grace,
                home=args.home)
    print(report)
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .store import store_home
    from .store.doctor import diagnose, repair
    from .store.inuse import StoreInUse

    home = args.home or store_home()
    try:
        report = repair(home) if args.repair else diagnose(home)
    except StoreInUse as e:  # another process writes to the store: the diagnosis, then why not
        print(e.report)
        print(e, file=sys.stderr)
        return 1
    print(report)
    return 0 if report.healthy or report.started_new else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbflow`` command."""
    args = _parser().parse_args(argv)
    from .core.errors import NbflowError
    from .store import StoreError

    try:
        if args.command == "runs":
            return _cmd_runs(args)
        if args.command == "gc":
            return _cmd_gc(args)
        if args.command == "doctor":
            return _cmd_doctor(args)
        from .batch import cli as batch_cli

        if args.command in batch_cli.COMMANDS:
            return batch_cli.main(args)
    except StoreError as e:
        print(f"nbflow: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"nbflow {args.command}: {e}", file=sys.stderr)
        return 2
    except NbflowError as e:  # bad input to a batch command: names the problem and the fix
        print(f"nbflow {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyError as e:  # no such run in the store
        print(f"nbflow {args.command}: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
