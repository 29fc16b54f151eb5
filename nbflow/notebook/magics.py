"""IPython magics: ``%%workflow`` runs a cell as a workflow, ``%nbflow`` lists runs.

``%%workflow [NAME] [--workers N] [--backend B] [--no-cache] [--rerun TASK ...]
[--no-lease] [--lease-ttl SECONDS] [--background] [--check] [--plan] [--quiet]`` executes
the cell body inside ``nf.Workflow(NAME)`` (task calls return Refs), then runs the workflow.  Afterwards every
name the cell bound to a Ref holds its value, and ``nf.last_run()`` is the Run.

- Blocking (default): the cell waits while the live view updates.  Interrupting the kernel
  cancels the run, waits until nothing it started is running, shows the cancelled summary
  and ends the cell with a one-line ``WorkflowCancelled`` error: wherever the interrupt
  lands once the run exists (while the cell prepares or starts it or opens its view too; and
  before a ``--background`` cell returns).  A failed run ends the cell
  with the first failure's original traceback (``WorkflowFailed``).
- ``--background``: the cell returns at once, the run goes on; the widget's Stop button
  cancels it and ``nf.last_run().wait()`` waits for it.
- ``--check`` / ``--plan``: show what would run; nothing runs and the namespace is left as
  it was.
- ``--quiet``: no live view; one line when the run ends.

The live view is the widget when a notebook front end sent the cell, text otherwise (see
:mod:`nbflow.notebook.frontend`).
"""

from __future__ import annotations

import difflib
import sys
import traceback
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..core import events as ev
from ..core.errors import NbflowError, WorkflowCancelled, WorkflowDefinitionError, WorkflowFailed
from ..core.options import BACKENDS, RunOptions
from ..workflow import Workflow, cancel_interrupted, prepare, run_options, start_in_thread
from . import binding, session
from .frontend import frontend_mode
from .live import LiveView
from .model import STATES, RunModel
from .tracebacks import trim

if TYPE_CHECKING:
    from ..engine.run import Run



# -- running -----------------------------------------------------------------------------

def _lease_options(args: Any) -> dict[str, Any]:
    """``lease``/``lease_ttl`` from ``--no-lease`` / ``--lease-ttl`` (checked as RunOptions)."""
    given = {"lease": False if args.no_lease else None, "lease_ttl": args.lease_ttl}
    RunOptions(**given)
    return {k: v for k, v in given.items() if v is not None}


def _backend_named(ns: dict[str, Any], backend: str) -> Any:
    """``--backend``'s value: a backend name or address as given, or the notebook variable
    of that name when it holds a ``distributed.Client``.  Running on the notebook's own
    client is what keeps results on the cluster between cells: a run given ``dask`` or an
    address opens a client of its own, and brings every result it still holds here before
    closing it."""
    if backend in BACKENDS or "://" in backend or not backend.isidentifier():
        return backend
    if backend not in ns:
        raise UsageError(
            f"%%workflow: unknown backend {backend!r}, and no notebook variable of that name: "
            "use local, process, dask, a scheduler address tcp://host:port, or the name of a "
            "variable holding a distributed.Client")
    value = ns[backend]
    try:
        from distributed import Client

        is_client = isinstance(value, Client)
    except ImportError:  # (without distributed no variable can be a Client)
        is_client = False
    if not is_client:
        raise UsageError(
            f"%%workflow --backend {backend}: the notebook variable {backend!r} is of type "
            f"{type(value).__name__}, not a distributed.Client; name a variable holding a "
            "Client (client = distributed.Client(...)) or give a backend name")
    return value


def _run_options(workers: int | None, backend: Any, cache: bool, rerun: list[str] | None) -> dict[str, Any]:
    opts: dict[str, Any] = {"workers": workers, "backend": backend, "cache": cache}
    if rerun:
        opts["rerun"] = list(rerun)
    return opts


class _Attach:
    """An ``nf.on_run`` factory that attaches subscribers to the run of one workflow."""

    def __init__(self, wf: Workflow, subscribers: list[ev.Subscriber],
                 interactive: bool = False) -> None:
        from ..core.events import on_run

        self.wf = wf
        self.subscribers = subscribers
        self.interactive = interactive
        self.run: Run | None = None
        self.unregister = on_run(self)

    def __call__(self, run: Run) -> ev.Subscriber | None:
        if run.workflow is not self.wf or self.run is not None:
            return None
        self.run = run
        self.unregister()
        self.unregister = _nothing  # (the registration's closure refers to this object: a cycle)
        if self.interactive:  # approvals wait for the widget's buttons (a background run)
            run.interactive_approvals = True
        for sub in self.subscribers:  # in this order, before the run's first event
            run.subscribe(sub)
        return None


def _nothing() -> None:
    return None


def launch(wf: Workflow, opts: dict[str, Any], subscribers: list[ev.Subscriber],
           interactive: bool = False, made: dict[str, Any] | None = None) -> Run:
    """Start ``wf`` with ``subscribers`` attached before its first event.

    ``made["run"]`` is the run as soon as it exists (while :func:`~nbflow.workflow.prepare`
    gives it its store hooks, too): a Ctrl-C that lands from then on leaves a run the caller
    must cancel (:func:`nbflow.workflow.cancel_interrupted`, which
    starts it if its thread had not: the subscribers still see it whole)."""
    made = {} if made is None else made
    attach = _Attach(wf, subscribers, interactive)  # unregisters itself when the run starts
    try:
        run = prepare(wf, run_options(wf, **opts), made)  # (made["run"]: as soon as it exists)
        start_in_thread(run)
        return run
    except BaseException as e:
        if "run" not in made or not isinstance(e, KeyboardInterrupt):
            attach.unregister()
        raise


def _wait_quietly(run: Run) -> None:
    """Wait until the run has ended; a further Ctrl-C while it winds down is absorbed."""
    while True:
        try:
            run.wait(raise_on_error=False)
            return
        except KeyboardInterrupt:
            run.cancel()


def _render_failed(err: WorkflowFailed, shell: Any) -> list[str]:
    cause = err.__cause__
    lines: list[str] = []
    if cause is not None:
        tb = trim(cause.__traceback__)
        try:
            lines = list(shell.InteractiveTB.structured_traceback(type(cause), cause, tb))
        except Exception:
            lines = "".join(traceback.format_exception(type(cause), cause, tb)).splitlines()
        lines.append("")
    lines.append(f"WorkflowFailed: {err}")
    return lines


def raise_for_status(run: Run, shell: Any, interrupted: bool = False) -> None:
    """End the cell as the run ended: nothing, a short cancelled error, or the original traceback."""
    if run.status == "cancelled":
        counts = run.counts
        why = " (kernel interrupted)" if interrupted else ""
        summary = ", ".join(f"{counts[k]} {k}" for k in STATES if counts.get(k))
        exc = WorkflowCancelled(run)
        msg = f"{exc}{why}: {summary}"
        exc.args = (msg,)
        exc._render_traceback_ = lambda: [f"WorkflowCancelled: {msg}"]  # type: ignore[attr-defined]
        raise exc from None
    try:
        run.wait()
    except WorkflowFailed as e:
        e._render_traceback_ = _renderer(e, lambda e: _render_failed(e, shell))  # type: ignore[attr-defined]
        raise
    except NbflowError as e:  # an error of the run itself (a cycle, a stall): its message says it all
        e._render_traceback_ = _renderer(e, lambda e: [f"{type(e).__name__}: {e}"])  # type: ignore[attr-defined]
        raise


def _renderer(err: BaseException, render: Callable[[Any], list[str]]) -> Callable[[], list[str]]:
    """``err._render_traceback_`` (IPython shows what it returns): ``render(err)``, with
    ``err`` held weakly: an error holding itself would make it, its traceback's frames and
    the run they hold one reference cycle, freed only by a full garbage collection."""
    ref = weakref.ref(err)

    def rendered() -> list[str]:
        e = ref()
        return render(e) if e is not None else []

    return rendered


def _unknown_rerun(wf: Workflow, names: list[str] | None) -> str | None:
    """The usage error for ``--rerun`` names that are no task or task key of ``wf``."""
    if not names:
        return None
    known = {r.name for r in wf.nodes} | {r.key for r in wf.nodes}
    bad = [n for n in names if n not in known]
    if not bad:
        return None
    close = difflib.get_close_matches(bad[0], sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (tasks: {', '.join(sorted(known)[:8])})"
    return f"%%workflow --rerun: no task or task key {bad[0]!r} in workflow {wf.name!r}{hint}"


def run_cell(shell: Any, line: str, cell: str) -> None:
    """What ``%%workflow`` does (see the module docstring)."""
    __tracebackhide__ = True  # IPython shows the cell's frame, not this machinery
    args = parse_argstring(WorkflowMagics.workflow, line)
    args.backend = _backend_named(shell.user_ns, args.backend)
    try:  # a bad --workers or --backend is a one-line usage error, before the cell runs
        RunOptions(workers=args.workers, backend=args.backend)
    except WorkflowDefinitionError as e:
        raise UsageError(f"%%workflow: {e}") from None
    opts = _run_options(args.workers, args.backend, not args.no_cache, args.rerun)
    try:  # --no-lease / --lease-ttl SECONDS: cache leases of this run (default NBFLOW_LEASE*)
        opts.update(_lease_options(args))
    except WorkflowDefinitionError as e:
        raise UsageError(f"%%workflow: {e}") from None
    ns = shell.user_ns
    if args.param:  # -p NAME VALUE: a parameter, set as a global and recorded with the run
        from ..params.params import set_cell_params

        set_cell_params(ns, args.param)
    wf = Workflow(args.name)
    before = dict(ns)
    filename = shell.compile.cache(cell)
    code = compile(cell, filename, "exec")
    try:
        with wf:
            exec(code, shell.user_global_ns, ns)
    except BaseException:
        binding.restore(ns, before, list(binding.bound_refs(ns, before, wf)))
        raise
    bound = binding.bound_refs(ns, before, wf)
    if args.check or args.plan:
        from IPython.display import display

        from .plan import plan_bundle

        binding.restore(ns, before, list(bound))
        display(plan_bundle(wf, check=args.check, cache=not args.no_cache, rerun=args.rerun,
                            workers=args.workers), raw=True)
        return
    if getattr(args, "forecast", False):  # predicted makespans from history; nothing runs
        from IPython.display import display

        from ..predict.forecast_view import forecast_bundle

        binding.restore(ns, before, list(bound))
        display(forecast_bundle(wf, workers=args.workers), raw=True)
        return
    if not wf.nodes:
        print(f"[nbflow] the cell called no tasks: workflow {wf.name!r} has nothing to run")
        return
    unknown = _unknown_rerun(wf, args.rerun)
    if unknown:
        binding.restore(ns, before, list(bound))
        raise UsageError(unknown)
    mode = "quiet" if args.quiet else frontend_mode(shell)[0]
    model = RunModel(wf)
    holder: dict[str, Any] = {}  # the run once prepared, then its view

    def on_finish(e: ev.Event) -> None:
        if type(e) is ev.RunFinished:
            binding.bind(ns, bound, holder["run"])  # before run.wait() returns anywhere
            view = holder.get("view")
            if view is not None and args.background:
                view.finish()

    on_finish.accepts_batches = True  # type: ignore[attr-defined]  # (it reads RunFinished only)

    # Approvals can be answered only where the kernel is free to receive button clicks: a
    # background run shown with a widget.  Elsewhere on_timeout decides (batch-runnable).
    binding.expect(wf, bound)  # (a Dask run brings the bound results with its end)
    try:  # a Ctrl-C anywhere from here until the run has ended cancels it (_interrupted)
        run = launch(wf, opts, [model, on_finish], interactive=args.background and mode == "widget",
                     made=holder)
        model.run = run
        view = holder["view"] = LiveView(model, run, mode, background=args.background)
        view.open()
        if args.background:
            view.follow_in_thread()
            if model.finished.is_set():
                view.finish()
            return
        view.follow()
    except KeyboardInterrupt:
        interrupted = _interrupted(model, holder, mode, args.background)
        if interrupted is None:  # (no run was made: nothing to cancel or show)
            raise
        raise_for_status(interrupted, shell, interrupted=True)
    _wait_quietly(run)
    view.finish()
    raise_for_status(run, shell)


def _interrupted(model: RunModel, holder: dict[str, Any], mode: str, background: bool) -> Run | None:
    """A Ctrl-C landed while the cell started or followed its run: cancel the run, wait
    until nothing it started is running, and show it cancelled; returns it (None: the
    Ctrl-C came before the run was prepared, there is none).

    Wherever it landed: before the run's thread started (it is started cancelled: it ends
    as every run does), before the cell held the run (``holder["run"]`` is it) or opened
    its view (opened now, to show the end)."""
    run: Run | None = holder.get("run")
    if run is None:
        return None
    model.run = run
    cancel_interrupted(run, _wait_quietly)
    view = holder.get("view")
    if view is None:
        view = holder["view"] = LiveView(model, run, mode, background=background)
        view.open()
    view.finish()
    return run


# -- the magics ---------------------------------------------------------------------------

NBFLOW_USAGE = """%nbflow runs          recent runs, newest first (the run store's, else this session's)
%nbflow show [RUN_ID] show a run's final view again (default: the last run)
%nbflow mode          whether this cell would get the live widget or text progress, and why"""


@magics_class
class WorkflowMagics(Magics):
    @magic_arguments()
    @argument("name", nargs="?", default="workflow", help="the workflow's name (default: workflow)")
    @argument("--workers", type=int, default=None, metavar="N", help="run at most N tasks at once")
    @argument("--backend", default="local",
              help="where tasks run: local (default), process, dask, a scheduler address "
                   "tcp://host:port, or the name of a notebook variable holding a distributed.Client")
    @argument("--no-cache", action="store_true", help="do not use cached results")
    @argument("--no-lease", action="store_true",
              help="no cache leases: do not wait for another process computing the same task")
    @argument("--lease-ttl", type=float, default=None, metavar="SECONDS",
              help="how long this run's leases stay valid without a heartbeat (default NBFLOW_LEASE_TTL)")
    @argument("--rerun", nargs="+", metavar="TASK", default=None,
              help="run these tasks again even if cached (needs the run store); put NAME first")
    @argument("--background", action="store_true",
              help="return at once; the run goes on (Stop button, nf.last_run().wait())")
    @argument("--check", action="store_true", help="show what would run and static checks; run nothing")
    @argument("--plan", action="store_true", help="show what would run; run nothing")
    @argument("--quiet", action="store_true", help="no live view: one line when the run ends")
    @argument("-p", "--param", nargs=2, action="append", default=None, metavar=("NAME", "VALUE"),
              help="set parameter NAME (value parsed as papermill does) for this run; repeatable")
    @argument("--forecast", action="store_true",
              help="show the predicted makespan per worker count (from history); run nothing")
    @cell_magic
    def workflow(self, line: str, cell: str) -> None:
        """Run the cell as an nbflow workflow (see nbflow.notebook.magics)."""
        __tracebackhide__ = True
        run_cell(self.shell, line, cell)

    @line_magic
    def nbflow(self, line: str) -> Any:
        """%nbflow runs | show [RUN_ID] | mode"""
        words = line.split()
        cmd = words[0] if words else ""
        if cmd == "runs":
            return session.runs_frame()
        if cmd == "show":
            from . import show

            run: Any = None
            if len(words) > 1:
                run = session.get_run(words[1])
                if run is None:  # not this session's: any run in the store
                    from ..store import StoreError, load_run

                    try:
                        run = load_run(words[1])
                    except (KeyError, StoreError):
                        raise UsageError(f"no run {words[1]!r} in this session or in the store "
                                         "(see %nbflow runs, nbflow runs)") from None
            show(run)
            return None
        if cmd == "mode":
            mode, why = frontend_mode(self.shell)
            print(f"{mode}: {why}")
            return None
        raise UsageError(NBFLOW_USAGE)


_loaded: set[int] = set()


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext nbflow`` (and ``import nbflow`` inside IPython): register the magics."""
    if id(ip) in _loaded:
        return
    ip.register_magics(WorkflowMagics)
    session.install()
    _loaded.add(id(ip))


def register_if_ipython() -> bool:
    """Register the magics if this process runs IPython (cheap no-op otherwise)."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    ip = get_ipython()
    if ip is None:
        return False
    load_ipython_extension(ip)
    return True
