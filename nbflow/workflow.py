"""The composition point: ``nf.Workflow`` traces a graph and runs it.

This is the one module that knows every room a run needs.  ``wf.run()``, ``wf.start()`` and
``await wf.arun()`` all go through :func:`prepare`:

1. the options become one validated :class:`~nbflow.core.options.RunOptions` (a batch run's
   ``--workers``/``--backend``/``--no-cache``/``--rerun`` fill in options the notebook left
   at their defaults: :func:`nbflow.params.env.run_defaults`);
2. the static checks (:mod:`nbflow.check`) look at the graph with the run's capacity: an
   error refuses the run before anything exists (``CycleError``, or a
   ``WorkflowDefinitionError`` with the findings table); conflicts warn, are serialised
   into ordering edges, or refuse, as ``on_conflict`` says;
3. the engine makes the :class:`~nbflow.engine.run.Run` (which validates executors and
   resource demands);
4. the prediction room (:mod:`nbflow.predict`) weighs dispatch priorities by the durations
   the store has seen (when it has), and gives tasks that needed much memory before their
   predicted peak as memory demand for admission (:mod:`nbflow.predict.memory`); what the
   store says of the graph's history was usually read ahead, after the previous Dask run's
   end, and is taken from there while the journal is unchanged (:mod:`nbflow.predict.ahead`);
5. the store (:mod:`nbflow.store`), when one is usable, gives the run its journal subscriber
   and — unless ``cache=False`` — its result cache.

The engine imports none of this: it receives the findings, the extra edges, the cache and
the subscribers as values.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any, Literal

from . import locality
from .check import check, format_findings, serialize_edges
from .core.errors import ConflictWarning, CycleError, InvalidOptionError, WorkflowDefinitionError
from .core.options import RunOptions
from .engine.gcpolicy import paused as gc_paused
from .engine.graph import WorkflowGraph
from .engine.run import Run as EngineRun
from .locality import predicted as locality_predicted
from .locality import under_way
from .params.env import run_defaults
from .predict import ahead
from .predict.memory import apply_predicted_memory
from .predict.priorities import apply_learned_priorities, mean_durations
from .store import hooks as store_hooks
from .store.recent import has_history, one_answer_per_query
from .store.rerun import Rerun


class Run(EngineRun):
    """``nf.Run``: one execution of a workflow (:class:`nbflow.engine.run.Run`), with the
    reports of the rooms that sit above the engine (prediction)."""

    def eta(self, predictor: Any = None, samples: int = 40) -> Any:
        """Remaining time of this run: median and 80% band, by simulating the unfinished
        graph on the run's workers with predicted durations (an ``nbflow.predict.eta.Eta``).
        ``predictor`` defaults to one fitted once on the store's history."""
        from .predict.entry import run_eta

        return run_eta(self, predictor=predictor, samples=samples)

    def prediction_report(self, predictor: Any = None) -> Any:
        """Predicted (from history before this run) against actual durations, per task call
        and per task, with the unusually slow calls (an ``nbflow.predict.report.PredictionReport``)."""
        from .predict.entry import prediction_report

        return prediction_report(self, predictor=predictor)


class Workflow(WorkflowGraph):
    """A traced task graph.  Use as ``with nf.Workflow("etl") as wf: ...`` then ``wf.run()``."""

    # The keyword-only options (continue_on_error, resources, rerun, strict, on_conflict) are
    # written once, in RunOptions, which validates them; unknown ones are refused there.

    # Task keys whose results the caller takes as the run ends (a %%workflow cell's
    # bindings: nbflow.notebook.binding.expect); a Dask run brings them with its end.
    bound_keys: frozenset[str] = frozenset()

    def run(self, workers: int | None = None, backend: Any = "local", cache: bool = True,
            raise_on_error: bool = True, **options: Any) -> Run:
        """Run the workflow and block until it ends; see :class:`nbflow.Run`.

        Works in plain scripts and inside a running Jupyter kernel (the run gets its own
        event loop in a helper thread).  Ctrl-C cancels the run, waits for it to wind
        down, and re-raises ``KeyboardInterrupt``.  A failed run raises
        :class:`nbflow.WorkflowFailed` unless ``raise_on_error=False``.

        Keyword options (:class:`nbflow.RunOptions`): ``continue_on_error=True``,
        ``resources=None``, ``rerun=None``, ``strict=False``, ``on_conflict="warn"``,
        ``lease=None``, ``lease_ttl=None`` (cache leases between processes; None: the
        ``NBFLOW_LEASE`` / ``NBFLOW_LEASE_TTL`` environment).
        ``cache=False`` neither reads nor stores results; ``rerun=[task, ...]`` (tasks, task
        names, keys or Refs) forces those tasks and their descendants to run; ``strict=True``
        fails the run when a stored result fails its checksum instead of recomputing it.

        Before anything runs, ``nf.check`` verifies the graph: an error (a cycle, a resource
        demand that can never fit, an unbounded loop) refuses the run with an exception that
        names it.  Tasks that may overlap while their declared ``reads``/``writes`` conflict
        give a ``ConflictWarning`` (``on_conflict="warn"``), are ordered so they never overlap
        (``"serialize"``), or refuse the run (``"error"``).
        """
        opts = run_options(self, workers=workers, backend=backend, cache=cache,
                           raise_on_error=raise_on_error, **options)
        run = prepare(self, opts)
        _start_and_wait(run, opts.raise_on_error)
        return run

    def start(self, workers: int | None = None, backend: Any = "local", cache: bool = True,
              **options: Any) -> Run:
        """Start the run in the background and return its :class:`nbflow.Run` at once
        (options as for :meth:`run`; ``run.wait()`` blocks until the end)."""
        run = prepare(self, run_options(self, workers=workers, backend=backend, cache=cache, **options))
        run.start_in_thread()
        return run

    async def arun(self, workers: int | None = None, backend: Any = "local", cache: bool = True,
                   raise_on_error: bool = True, **options: Any) -> Run:
        """The async twin of :meth:`run`: runs on the caller's event loop."""
        opts = run_options(self, workers=workers, backend=backend, cache=cache,
                           raise_on_error=raise_on_error, **options)
        run = prepare(self, opts)
        await run.execute()
        if opts.raise_on_error:
            run.raise_for_status()
        return run


def _start_and_wait(run: Run, raise_on_error: bool) -> None:
    """Start ``run`` in its thread and wait for it, a Ctrl-C cancelling it wherever it lands.

    Once :meth:`Run.wait` waits, a Ctrl-C is its to handle (it cancels the run, waits for
    its end, and re-raises; a second Ctrl-C during that wait is the caller's).  One that
    lands before (while the run's thread starts, or between its start and the wait: on a
    busy machine the calling thread may not run again until the run's tasks have started)
    used to leave the run going behind the caller's back; it is cancelled here the same
    way."""
    try:
        start_in_thread(run)
        run.wait(raise_on_error=raise_on_error)
    except KeyboardInterrupt:
        cancel_interrupted(run, lambda r: r.wait(raise_on_error=False))
        raise


def start_in_thread(run: EngineRun) -> None:
    """``run.start_in_thread()``, with a Ctrl-C that arrives meanwhile raised once it returns.

    ``Thread.start`` waits for the new thread to begin: a Ctrl-C landing in that wait
    leaves a thread that will run while nothing says so yet (its ``ident`` is set by the
    thread itself), and the caller could not tell whether there is a run to wait for.
    Held off here, it is raised after the start: a run's thread is either not made or
    started, as :func:`cancel_interrupted` needs."""
    with _ctrl_c_held():
        run.start_in_thread()


def cancel_interrupted(run: EngineRun, wait: Callable[[EngineRun], Any]) -> None:
    """A Ctrl-C landed while ``run`` started or ran: cancel it and ``wait(run)`` until it
    has ended (its tasks stopped, its journal rows committed).

    A run whose thread had not started yet is started now, cancelled from its first
    moment: it ends as every run does, so the store shows it cancelled and what
    :func:`prepare` gave it (the journal's writer, the cache's lease registration) is let
    go.  One that :meth:`Run.wait` already wound down is left as it is.  Shared by
    ``wf.run()`` and the ``%%workflow`` cell, which differ only in ``wait``: a second
    Ctrl-C is ``wf.run()``'s caller's, while the cell absorbs it to show the run."""
    if run.done:
        return
    run.cancel()
    try:
        if run._thread is None:
            start_in_thread(run)
    finally:
        wait(run)


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """SIGINT held for the block and delivered to its handler as the block ends.

    Only Python's main thread receives it, and only a Python-level handler can hold it;
    anywhere else (another thread, SIGINT ignored or left to the OS) this does nothing."""
    old = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(old):
        yield
        return
    held: list[tuple[int, Any]] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if held:
            old(*held[0])  # (Python's default handler raises KeyboardInterrupt here)


def run_options(wf: WorkflowGraph, **given: Any) -> RunOptions:
    """The validated :class:`RunOptions` of a run of ``wf`` (a batch run's ``--workers``/
    ``--backend``/``--no-cache``/``--rerun`` fill in what the notebook left at defaults)."""
    given["workers"], given["backend"], given["cache"], given["rerun"] = run_defaults(
        wf, given.get("workers"), given.get("backend", "local"), given.get("cache", True),
        given.get("rerun"))
    allowed = [f.name for f in fields(RunOptions) if f.init]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise InvalidOptionError(
            f"run of workflow {wf.name!r}: unknown option(s) {unknown}; the options are "
            f"{', '.join(allowed)}")
    return RunOptions(**given)


def prepare(wf: WorkflowGraph, options: RunOptions, made: dict[str, Any] | None = None) -> Run:
    """Check ``wf``, make its Run, and give the run its store hooks (:func:`_prepare`).

    A Ctrl-C that lands once the Run exists, while it is given what the store gives a run
    (the journal's writer, the cache's lease registration and its watcher thread), would
    leave that run half-made: never started, so never ended, and what it was given kept
    for the life of the process.  It is cancelled instead, as one landing before its start
    is (:func:`cancel_interrupted`: started cancelled, it ends as every run does and the
    store shows it cancelled); then the KeyboardInterrupt goes on.  With ``made`` given,
    ``made["run"]`` is the Run as soon as it exists and cancelling it is the caller's (the
    ``%%workflow`` cell shows it cancelled, as after any interrupt).

    Any other error from then on (a store hook that broke, the predictions, the locality
    room) left the same half-made run, the journal counting it as a run in progress for
    good (so no later run's end let the journal's writer go).  That run is ended here too,
    whoever the caller: failed, with that error (:meth:`Run.fail_before_start`; the store
    records its type and message), and the error is raised unchanged."""
    own = made is None
    made = {} if made is None else made
    try:
        return _prepare(wf, options, made)
    except KeyboardInterrupt:
        if own and "run" in made:
            cancel_interrupted(made["run"], _wait_ended)
        raise
    except Exception as e:
        if "run" in made:
            _end_unstarted(made["run"], e)
        raise


def _wait_ended(run: EngineRun) -> None:
    run.wait(raise_on_error=False)


def _end_unstarted(run: EngineRun, error: Exception) -> None:
    """End ``run``, which its preparation's ``error`` left unstarted: failed with that error,
    starting no task; a failure to end it is logged, never raised in place of ``error``."""
    try:
        with _ctrl_c_held():  # (its thread made and started, or not made: as start_in_thread)
            run.fail_before_start(error)
        _wait_ended(run)
    except Exception:
        logging.getLogger(__name__).warning(
            "nbflow: run %s could not be ended after its preparation failed", run.id, exc_info=True)


def _prepare(wf: WorkflowGraph, options: RunOptions, made: dict[str, Any]) -> Run:
    """Check ``wf``, make its Run (``made["run"]``), and give the run its store hooks (see
    the module doc)."""
    with gc_paused():  # (checking and planning make a list or two per node: nothing to collect)
        findings = _check(wf, options)
        extra = serialize_edges(wf.nodes) if options.on_conflict == "serialize" else []
        run = made["run"] = Run(wf, options, findings=findings, extra_edges=extra)
    # (found once: finding it walks the folders above the working directory, and every hook
    # and history read below needs it)
    store = store_hooks.run_store()
    journal = store_hooks.journal_subscriber(run, store)
    if journal is not None:
        # (the summary first: at the run's end it is queued before the end row, and written
        # in the commit the run waits for, after every attempt's row)
        summary = store_hooks.summary_subscriber(run, store)
        if summary is not None:
            run.subscribe(summary)
        run.subscribe(journal)
    # (priorities and placement read the same durations; the history read is a row per node
    # of the graph, and a collection in the middle of it would walk the whole graph.  On
    # Dask, placement also reads output sizes: over the same rows, so in the same pass.)
    together = ("duration_s", "output_bytes") if "dask" in run.backends else ()
    # (under_way: a Dask run's graph goes to Dask before an earlier run's deferred end-of-run read)
    with one_answer_per_query(together), gc_paused(), under_way.preparing(run):
        keys = [r.key for r in run.nodes]  # (history is read for these only)
        # (what was read ahead for this graph, if the journal still says so; and read it
        # ahead for the next run too)
        prepared = ahead.preparing(store)  # (a read ahead at an earlier run's end skips if so)
        ahead.use(store, run.name, run.id, keys)
        ahead.want(store, run.name, keys, together)
        history = _has_history(run, keys, store)  # a first run skips the other queries over history
        # With history, dispatch priorities weigh tasks by their measured durations.
        run.learned_priorities = apply_learned_priorities(run, keys, store) if history else False
        # With recorded peak memory, memory-heavy tasks only start when their peak fits.
        run.predicted_memory = apply_predicted_memory(run, store) if history else {}
        if options.cache:
            run.attach_cache(store_hooks.run_cache(run, store))
        agent = locality.attach(run)  # Dask: placement, transfer accounting; every run: the report
        if agent is not None:
            agent.sink = store_hooks.transfer_sink(run, store)  # run.transfers also go to the journal
            if agent.sink is not None:  # (its rows committed after the run: the next one's history)
                agent.sink.ahead = functools.partial(ahead.read_ahead, store, prepared)
            if history:
                _predict_placement(run, agent, keys, store)
    dask = run.backends.get("dask")
    if dask is not None:  # results the caller takes as the run ends come with its end
        dask.wanted = frozenset(getattr(wf, "bound_keys", ()))  # (a WorkflowGraph has none)
    process = run.backends.get("process")
    if process is not None:  # (the process backend counts its own transfers)
        process.sink = store_hooks.transfer_sink(run, store)
    return run


def _has_history(run: Run, keys: list[str], store: Any = None) -> bool:
    """Is there history to predict from?  The durations are asked first: priorities and
    placement read them anyway (the answer is kept for them: ``one_answer_per_query``),
    and a duration they name comes from a completed attempt that ran, which is what
    :func:`has_history` looks for (over at least those runs).  Only when they name none
    (a first run, or runs served from the cache) is that question asked on its own."""
    try:
        by_name, by_key = mean_durations(run.name, exclude_run=run.id, store=store, keys=keys)
        return bool(by_name or by_key) or has_history(run.name, exclude_run=run.id, store=store)
    except Exception:  # an unreadable store must never stop a run: no predictions then
        return False


def _predict_placement(run: Run, agent: Any, keys: list[str] | None = None, store: Any = None) -> None:
    """Hand the placement rule what history predicts per task: output bytes (locality
    room) and durations (prediction room), so tasks submitted before their inputs finish
    are placed by the sizes those inputs will have, and queues weigh expected work."""
    if keys is None:
        keys = [r.key for r in run.nodes]
    try:
        sizes = locality_predicted.output_sizes(run.name, exclude_run=run.id, store=store, keys=keys)
        seconds = mean_durations(run.name, exclude_run=run.id, store=store, keys=keys)
    except Exception:  # an unreadable store must never stop a run: no predictions then
        return
    nodes = [(r.name, r.key) for r in run.nodes]
    agent.predict({k: int(v) for k, v in locality_predicted.per_key(nodes, *sizes).items()},
                  locality_predicted.per_key(nodes, *seconds))


def _check(wf: WorkflowGraph, options: RunOptions) -> Any:
    """Static verification before anything runs: errors refuse the run (this is not a
    WorkflowFailed: no run happened); conflicts warn, serialise or refuse."""
    severity: Literal["error", "warning"] = "error" if options.on_conflict == "error" else "warning"
    findings = check(wf.nodes, resources=options.capacity, conflict_severity=severity)
    errors = findings.errors
    if errors:
        cycle = next((f for f in errors if f.code == "cycle"), None)
        if cycle is not None:
            raise CycleError(list(cycle.tasks))
        raise WorkflowDefinitionError(
            f"workflow {wf.name!r} cannot run; nf.check found:\n{format_findings(errors)}")
    if options.cache and options.rerun:
        # A ``rerun=`` naming no task of the workflow is refused here, before a run exists
        # (the cache resolves it again when bound to the run, over the same nodes): a typo
        # leaves no run behind, not even a cancelled one.
        Rerun(options.rerun, wf.nodes, wf, wf.name)
    conflicts = [f for f in findings if f.code in ("conflict", "map-conflict")]
    if conflicts and options.on_conflict == "warn":
        warnings.warn(
            f"nbflow: {len(conflicts)} read/write conflict(s) between tasks that may run at "
            f"the same time, e.g. {conflicts[0].message} Run with on_conflict='serialize' to "
            "order them, or see nf.check(wf).",
            ConflictWarning, stacklevel=4)
    return findings
