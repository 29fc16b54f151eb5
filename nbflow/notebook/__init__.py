"""The notebook room: ``%%workflow``, the live run widget, headless progress, static views.

Modules, one job each:

- :mod:`.magics`    ``%%workflow`` and ``%nbflow`` (IPython magics)
- :mod:`.frontend`  live widget or text progress? (the detection rule)
- :mod:`.model`     per-task state of a run, fed by its events
- :mod:`.live`      following a run in a cell and emitting the final output
- :mod:`.widget`    the ipywidgets view, with coalesced updates
- :mod:`.progress`  headless text progress
- :mod:`.grouping`  folding large graphs into group nodes
- :mod:`.layout`    Graphviz ``dot`` layout, networkx layered fallback
- :mod:`.render`    static SVG/HTML (graph, progress line, tables, errors)
- :mod:`.plan`      ``--plan`` / ``--check`` output
- :mod:`.binding`   names bound to Refs get their values
- :mod:`.session`   the runs of this kernel session (``%nbflow runs``)
- :mod:`.stored`    a run read back from the store as the views see a live one

Importing this package is cheap: IPython, ipywidgets and pandas are imported only when used,
so ``import nbflow`` may call :func:`register_if_ipython` unconditionally.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine.run import Run

__all__ = ["load_ipython_extension", "model_of_run", "register_if_ipython", "show", "view_run"]


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext nbflow`` / ``%load_ext nbflow.notebook``: register the magics."""
    from .magics import load_ipython_extension as load

    load(ip)


def register_if_ipython() -> bool:
    """Register the magics when running inside IPython; a no-op (False) otherwise."""
    if "IPython" not in sys.modules:
        return False
    from .magics import register_if_ipython as register

    return register()


def view_run(run: Run) -> Any:
    """A :class:`~nbflow.notebook.model.RunModel` of ``run`` rebuilt from its events."""
    from .model import RunModel

    model = RunModel(run.workflow, run)
    for event in list(run.events):
        model(event)
    return model


def model_of_run(run: Any) -> Any:
    """The :class:`~nbflow.notebook.model.RunModel` of a live Run or of a stored run."""
    if hasattr(run, "events") and hasattr(run, "workflow"):
        model = view_run(run)
        _with_transfers(model, run)
        return model
    from .stored import model_of  # a run read back from the store (nf.load_run)

    return model_of(run)


def _with_transfers(model: Any, run: Any) -> None:
    """Bytes Dask moved between tasks (``run.transfers``), for the edge widths."""
    try:
        moved = run.transfers
    except Exception:  # no locality view (a run not made by nf.Workflow): output sizes only
        return
    if moved is None or len(moved) == 0:
        return
    for (producer, consumer), nbytes in moved.groupby(["producer", "consumer"])["bytes"].sum().items():
        model.edge_bytes[(producer, consumer)] = int(nbytes)


def show(run: Any = None, *, widget: bool | None = None) -> None:
    """Display the final view of ``run`` (default: ``nf.last_run()``; a live Run or a stored
    run from ``nf.load_run``): the run widget with a static HTML copy (what a saved notebook
    shows), or the static HTML alone when ``widget=False`` or no widget can be shown."""
    from IPython.display import display

    from ..engine.run import last_run
    from . import render
    from .graphview import GraphView

    run = run if run is not None else last_run()
    if run is None:
        print("[nbflow] no run yet")
        return
    model = model_of_run(run)
    if widget is None:
        from .frontend import frontend_mode

        widget = frontend_mode()[0] == "widget"
    if widget:
        from .widget import RunWidget

        view = RunWidget(model, None, graph=GraphView(model))
        view.final()
        display(view.mimebundle(), raw=True)
        return
    graph = GraphView(model)
    display({"text/plain": render.summary_text(model),
             "text/html": render.static_html(model, graph.svg(), graph.note)}, raw=True)
