"""``nbflow run``: execute one notebook as a batch run, with papermill as the engine.

What happens, in order:

1. A batch row is written to the store (status ``running``) with the notebook, the output
   path, the parameters and the run options.
2. papermill injects the parameters into the cell tagged ``parameters`` and executes the
   notebook in a new kernel whose environment carries the batch id, the parameters and the
   run defaults (:mod:`nbflow.params.env`), and ``NBFLOW_HOME`` so the kernel writes to the
   same store.  Every workflow run the kernel starts is linked to the batch.
3. The terminal shows one line per code cell (with an estimate of the time left, from the
   last finished batch run of the same notebook) and the kernel's ``[nbflow]`` lines.
4. The batch row is closed as ``completed``, ``failed`` (the failing cell's error) or
   ``cancelled`` (Ctrl-C or SIGTERM: the kernel is interrupted so its workflow run cancels
   cleanly, then shut down).  The output notebook is written in every case.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..core.errors import NbflowError
from ..params import env
from . import paramcheck, records

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}
STOP_GRACE = 30.0  # seconds a stopped kernel gets to wind its run down before it is shut down
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class BatchError(NbflowError):
    """A batch run cannot start (no such notebook, bad parameters, no store)."""


@dataclass
class BatchOptions:
    """Everything ``nbflow run`` takes (see the README's "Batch runs")."""

    notebook: str
    output: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    kernel: str | None = None
    workers: int | None = None
    backend: str | None = None
    no_cache: bool = False
    rerun: list[str] | None = None
    # cache leases of the notebook's runs (None: the environment's NBFLOW_LEASE / _TTL)
    no_lease: bool = False
    lease_ttl: float | None = None
    timeout: float | None = None
    resume: bool = False
    cwd: str | None = None
    log_output: bool = False
    quiet: bool = False
    batch_id: str | None = None
    kind: str = "notebook"
    parent: str | None = None


@dataclass
class BatchResult:
    """How a batch run ended."""

    batch_id: str
    status: str  # completed | failed | cancelled
    output: str
    exit_code: int
    error: str | None = None  # "ExcType: message"
    traceback: str | None = None  # the failing cell's traceback (plain text)
    cell: int | None = None  # index of the failing cell
    duration_s: float = 0.0
    runs: list[str] = field(default_factory=list)
    kernel_log: Path | None = None  # what the kernel's process printed (None: nothing)


def default_output(notebook: str) -> str:
    p = Path(notebook)
    return str(p.with_name(p.stem + ".out.ipynb"))


def _last_duration(store: Any, notebook: str) -> float | None:
    rows = store.journal.query(
        "SELECT duration_s FROM batches WHERE notebook = ? AND status = 'completed' "
        "ORDER BY start DESC LIMIT 1",
        (notebook,),
    )
    return rows[0][0] if rows and rows[0][0] else None


def _resume_parameters(store: Any, notebook: str) -> dict[str, Any] | None:
    """The parameters of the latest batch run of ``notebook`` (for ``--resume``)."""
    rows = store.journal.query(
        "SELECT parameters FROM batches WHERE notebook = ? ORDER BY start DESC LIMIT 1", (notebook,)
    )
    if not rows or not rows[0][0]:
        return None
    import json

    return json.loads(rows[0][0])


class _Progress:
    """The terminal lines of one batch run."""

    def __init__(self, out: TextIO, name: str, expected: float | None, quiet: bool, log_output: bool) -> None:
        self.out = out
        self.name = name
        self.expected = expected
        self.quiet = quiet
        self.log_output = log_output
        self.t0 = time.monotonic()
        self.code_cells = 0
        self.done_cells = 0

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.out, flush=True)

    def cell(self, index: int, n: int, cell: Any, phase: str) -> None:
        if cell.cell_type != "code" or phase != "start":
            return
        self.code_cells += 1
        elapsed = time.monotonic() - self.t0
        eta = ""
        if self.expected:
            left = max(0.0, self.expected - elapsed)
            eta = f", about {left:.0f} s left (last run took {self.expected:.0f} s)"
        first = (cell.source.strip().splitlines() or [""])[0][:60]
        self._say(f"[nbflow run] {self.name}: cell {index + 1}/{n} {first!r} ({elapsed:.1f} s{eta})")

    def line(self, stream: str, text: str) -> None:
        for ln in text.splitlines():
            if self.log_output or ln.startswith("[nbflow"):
                self._say(f"  {ln}")


def run_notebook(opts: BatchOptions, *, out: TextIO | None = None) -> BatchResult:
    """Run ``opts.notebook`` as one batch run and return how it ended (never raises for a
    failing notebook; raises :class:`BatchError` when the run cannot start)."""
    try:
        import papermill as pm
    except ImportError:
        raise BatchError(
            "batch runs need papermill: pip install 'nbflow[batch]' (or pip install papermill)"
        ) from None
    from papermill.exceptions import PapermillExecutionError

    from . import engine as nbengine

    out = out if out is not None else sys.stderr
    nb_path = Path(opts.notebook)
    if not nb_path.is_file():
        raise BatchError(f"no notebook {opts.notebook!r}: give the path of an .ipynb file")
    notebook = str(nb_path.resolve())
    output = opts.output or default_output(opts.notebook)
    store = records.require_store()
    paramcheck.check_parameters(nb_path, opts.parameters)  # a typo'd -p name: refused, nothing runs
    params = dict(opts.parameters)
    if opts.resume:
        before = _resume_parameters(store, notebook)
        if before:
            params = {**before, **params}
    batch_id = opts.batch_id or records.new_batch_id()
    options = {
        k: v
        for k, v in (
            ("kernel", opts.kernel),
            ("workers", opts.workers),
            ("backend", opts.backend),
            ("no_cache", opts.no_cache or None),
            ("rerun", opts.rerun),
            ("no_lease", opts.no_lease or None),
            ("lease_ttl", opts.lease_ttl),
            ("timeout", opts.timeout),
            ("resume", opts.resume or None),
        )
        if v is not None
    }
    expected = _last_duration(store, notebook)
    records.start_batch(
        store,
        batch_id,
        kind=opts.kind,
        notebook=notebook,
        output=str(Path(output).resolve()),
        parameters=params,
        options=options,
        parent=opts.parent,
    )
    started = time.time()
    progress = _Progress(out, nb_path.name, expected, opts.quiet, opts.log_output)
    progress._say(f"[nbflow run] {nb_path.name}: batch {batch_id}, parameters {params or '{}'} -> {output}")
    control = nbengine.Control(on_cell=progress.cell, on_line=progress.line)

    kernel_env = env.kernel_env(
        batch_id, params, workers=opts.workers, backend=opts.backend, no_cache=opts.no_cache, rerun=opts.rerun
    )
    kernel_env.update(env.lease_env(no_lease=opts.no_lease, lease_ttl=opts.lease_ttl))
    kernel_env["NBFLOW_HOME"] = str(store.home)
    kernel_env.setdefault("NBFLOW_HEADLESS", "1")
    # The kernel's own environment and directory, given at its start (not this process's:
    # several batch runs may run at once in one process, as nf.notebook tasks do).
    inherited = {k: v for k, v in os.environ.items() if k not in env.ALL}  # not an enclosing batch's
    control.env = {**inherited, **kernel_env}
    control.cwd = str(Path(opts.cwd).resolve()) if opts.cwd else os.getcwd()
    control.kernel_log = kernel_log_path(store.home, batch_id)

    status, error, tb, cell = "completed", None, None, None
    with _stop_on_signals(control):
        try:
            pm.execute_notebook(
                notebook,
                output,
                parameters=_injectable(params),
                engine_name=nbengine.ENGINE_NAME,
                kernel_name=opts.kernel,
                progress_bar=False,
                log_output=False,
                execution_timeout=opts.timeout,
                nbflow_control=control,
            )
        except PapermillExecutionError as e:
            unexpected = e if control.stop_reason else _unexpected_error(output)
            if unexpected is not None:
                status = "cancelled" if control.stop_reason else "failed"
                error = f"{unexpected.ename}: {unexpected.evalue}"
                if control.stop_reason:
                    error = f"stopped by {control.stop_reason}; the running cell ended with {error}"
                tb = _ANSI.sub("", "\n".join(unexpected.traceback))
                cell = unexpected.cell_index
        except (nbengine.Stopped, KeyboardInterrupt):
            status = "cancelled"
            error = f"stopped by {control.stop_reason or 'SIGINT'}"
        except Exception as e:  # the kernel died, would not start, a cell timed out, ...
            status = "cancelled" if control.stop_reason else "failed"
            error = f"{type(e).__name__}: {e}"
            tb = _ANSI.sub("", str(e))
            cell = control.current_cell
            said = _kept_log(control.kernel_log)
            if said is not None:  # (a kernel that died may have said why, there only)
                with contextlib.suppress(OSError):  # (never in place of the failure itself)
                    tb = f"{tb}\n\nthe kernel's last output ({said}):\n{log_tail(said)}"
        finally:
            if status == "cancelled" and not error:
                error = f"stopped by {control.stop_reason}"
            records.finish_batch(store, batch_id, status, started, error)
    duration = time.time() - started
    if status == "completed":
        code = EXIT_OK
    elif status == "cancelled":
        code = EXIT_SIGNAL.get(control.stop_reason or "SIGINT", 130)
    else:
        code = EXIT_FAILED
    runs = records.runs_of_batch(store, batch_id)
    progress._say(
        f"[nbflow run] {nb_path.name}: {status} in {duration:.1f} s, {len(runs)} workflow run(s); "
        f"output notebook {output}"
    )
    if opts.rerun and status != "cancelled":
        _warn_unmatched_rerun(out, nb_path.name, store, runs, opts.rerun)
    return BatchResult(batch_id, status, output, code, error, tb, cell, duration, runs,
                       _kept_log(control.kernel_log))


def kernel_log_path(home: Path, batch_id: str) -> Path:
    """Where batch ``batch_id``'s kernel process writes its own output (see ``engine``)."""
    return home / "batches" / f"{batch_id}.kernel.log"


def _kept_log(path: Path | None) -> Path | None:
    """``path`` if the kernel wrote anything there; an empty log is removed."""
    if path is None:
        return None
    try:
        if path.stat().st_size:
            return path
        path.unlink()
    except FileNotFoundError:  # (the kernel never started)
        pass
    return None


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a kernel log (what a dead kernel said last)."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 64 * 1024))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def _unexpected_error(output: str) -> Any:
    """The first error of the executed notebook ``output`` in a cell *not* tagged
    ``raises-exception`` (as a ``PapermillExecutionError``), or None.

    A cell tagged ``raises-exception`` is meant to fail (a notebook that shows what a failure
    looks like): nbclient and nbval run on past it, and so does the engine, but papermill then
    reports the first error output it finds, expected or not.  When every error is expected
    the batch completed: papermill's red error banners are taken out of the output notebook
    again.  Otherwise the error to report is the first unexpected one, not an expected one
    before it."""
    import nbformat
    from papermill.exceptions import PapermillExecutionError
    from papermill.execute import remove_error_markers

    nb = remove_error_markers(nbformat.read(output, as_version=4))
    for index, c in enumerate(nb.cells):
        if "raises-exception" in c.get("metadata", {}).get("tags", []):
            continue
        for out in c.get("outputs", []):
            if out.get("output_type") == "error" and not (
                out.get("ename") == "SystemExit" and out.get("evalue") in ("", "0")
            ):
                return PapermillExecutionError(index, c.get("execution_count"), c.source,
                                               out.get("ename"), out.get("evalue"), out.get("traceback", []))
        if c.get("metadata", {}).get("papermill", {}).get("exception") is True:
            return PapermillExecutionError(index, c.get("execution_count"), c.source,
                                           "CellExecutionError", "", [])
    nbformat.write(nb, output)
    return None


def _warn_unmatched_rerun(out: TextIO, name: str, store: Any, runs: list[str], rerun: list[str]) -> None:
    # Said even with --quiet: a --rerun name that matched nothing forced nothing to run again,
    # and the batch would otherwise look as if it had.
    missed, tasks = paramcheck.unmatched_rerun(store, runs, rerun)
    if missed:
        print(f"[nbflow run] {name}: warning: --rerun {' '.join(missed)} matched no task of the "
              f"notebook's workflow runs (their tasks: {', '.join(tasks) or 'none'}), so nothing "
              "was run again for it; give a task name or key", file=out, flush=True)


def _injectable(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters papermill injects: all but references to upstream notebook outputs,
    which reach the kernel only through ``NBFLOW_PARAMS`` and are read with ``nf.param``."""
    from .nbtask import MARKER

    return {k: v for k, v in params.items() if not (isinstance(v, dict) and set(v) == {MARKER})}


@contextlib.contextmanager
def _stop_on_signals(control: Any) -> Any:
    """Ctrl-C / SIGTERM: interrupt the kernel (its run cancels) and run no further cell; a
    second signal, or a kernel still busy after STOP_GRACE seconds, stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old: dict[int, Any] = {}
    timers: list[threading.Timer] = []

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if not control.request_stop(name):
            raise KeyboardInterrupt
        timer = threading.Timer(STOP_GRACE, _interrupt_main)
        timer.daemon = True
        timers.append(timer)
        timer.start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for t in timers:
            t.cancel()
        for signum, h in old.items():
            signal.signal(signum, h)


def _interrupt_main() -> None:
    import _thread

    _thread.interrupt_main()
