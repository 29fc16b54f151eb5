"""``nf.notebook(path, parameters=..., outputs=[...])``: a notebook as a task of a workflow.

Inside a workflow the call adds a task (named after the notebook's file, e.g. ``prep``)
that runs the notebook as a batch run of its own — ``nbflow run``'s runner, in a thread of
this process, with a kernel of its own started with its own environment and directory (so
several notebooks run at once without sharing a kernel; jupyter_client's port cache keeps
kernels started at the same moment from picking the same ports) — and returns its recorded
outputs as a :class:`NotebookOutputs` dict.  Outside
a workflow the call runs the notebook at once and returns that dict.

Chaining: pass one notebook's result in another's ``parameters``.  What the downstream
kernel receives is a reference to the upstream batch run, and ``nf.param(name)`` there
returns the upstream outputs dict (values of any type: DataFrames, figures, ...).  Plain
parameters (numbers, strings, lists, dicts) are injected by papermill as usual.

Caching: the task's inputs are the notebook's *code cells* (their sources; markdown and
outputs do not count), its parameters (upstream outputs by content) and the output names,
so a second run of the workflow is served from the cache, and editing one notebook re-runs
it and — only if its outputs changed — the notebooks that use them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..core.errors import NbflowError
from ..params.params import add_value_hook
from ..store import hashing

MARKER = "__nbflow_outputs__"


class NotebookFailed(NbflowError):
    """A notebook run as a task failed (its cell, error and traceback are in the message)."""


class NotebookOutputs(dict):
    """The outputs of a notebook run: ``{name: value}``, plus the ``batch_id`` they belong to."""

    def __init__(self, values: dict[str, Any], batch_id: str, notebook: str, output: str) -> None:
        super().__init__(values)
        self.batch_id = batch_id
        self.notebook = notebook
        self.output = output

    def __reduce__(self) -> Any:
        return (NotebookOutputs, (dict(self), self.batch_id, self.notebook, self.output))


def code_digest(path: str | os.PathLike[str]) -> str:
    """A digest of the notebook's code cells (sources only, in order)."""
    import nbformat

    nb = nbformat.read(os.fspath(path), as_version=4)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    return hashing.value_hash(sources)


def _to_param(value: Any) -> Any:
    if isinstance(value, NotebookOutputs):
        return {MARKER: value.batch_id}
    if isinstance(value, dict):
        return {k: _to_param(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_param(v) for v in value]
    return value


def _default_output(path: Path, parameters: dict[str, Any]) -> Path:
    if not parameters:
        return path.with_name(f"{path.stem}.out.ipynb")
    return path.with_name(
        f"{path.stem}-{hashing.value_hash(repr(sorted(parameters.items())))[1:9]}.out.ipynb"
    )


def run_notebook_task(
    path: str,
    code: str,
    parameters: dict[str, Any],
    outputs: list[str] | None,
    output_path: str | None,
    kernel: str | None,
    timeout: float | None,
    cwd: str | None,
) -> NotebookOutputs:
    """Run one notebook as a batch run (in this process, its own kernel) and return its outputs.

    ``code`` is the digest of the notebook's code cells: it is an argument only so that it
    enters the task's cache key."""
    from ..engine.run import last_run
    from .outputs import outputs as read_outputs
    from .runner import BatchOptions, run_notebook

    nb = Path(path)
    out = Path(output_path) if output_path else _default_output(nb, parameters)
    parent = last_run()
    opts = BatchOptions(
        notebook=str(nb),
        output=str(out),
        parameters=_to_param(parameters),
        kernel=kernel,
        timeout=timeout,
        cwd=cwd or str(nb.parent),
        quiet=True,
        kind="notebook-task",
        parent=parent.id if parent is not None else None,
    )
    result = run_notebook(opts, out=sys.stderr)
    if result.status != "completed":
        where = f" in cell {result.cell + 1}" if result.cell is not None else ""
        raise NotebookFailed(
            f"notebook {nb.name} {result.status}{where}: {result.error} (batch {result.batch_id}, "
            f"output notebook {out})" + (f"\n\n{result.traceback}" if result.traceback else "")
        )
    try:
        values = read_outputs(result.batch_id)
    except NbflowError:
        values = {}
    if outputs is not None:
        missing = [n for n in outputs if n not in values]
        if missing:
            raise NotebookFailed(
                f"notebook {nb.name} did not record the outputs {missing} (it recorded "
                f"{sorted(values)}); record them with nf.output(name, value)"
            )
        values = {n: values[n] for n in outputs}
    return NotebookOutputs(values, result.batch_id, str(nb), str(out))


def notebook(
    path: str | os.PathLike[str],
    parameters: dict[str, Any] | None = None,
    outputs: list[str] | None = None,
    *,
    name: str | None = None,
    output_path: str | None = None,
    kernel: str | None = None,
    timeout: float | None = None,
    cwd: str | None = None,
    retries: int = 0,
) -> Any:
    """Run notebook ``path`` (as a task when called inside a workflow; see the module docs).

    ``parameters`` may hold Refs (results of other tasks or notebooks); ``outputs`` lists
    the names the notebook must record with ``nf.output`` (default: whatever it records).
    Returns an ``nf.Ref`` inside a workflow, else the :class:`NotebookOutputs`."""
    from ..engine.graph import current_workflow
    from ..engine.spec import task

    nb = Path(path)
    if not nb.is_file():
        raise NotebookFailed(f"no notebook {os.fspath(path)!r}: give the path of an .ipynb file")
    if parameters is not None and not isinstance(parameters, dict):
        raise NotebookFailed(f"parameters must be a dict of name -> value, got {type(parameters).__name__}")
    if outputs is not None and (isinstance(outputs, str) or not all(isinstance(o, str) for o in outputs)):
        raise NotebookFailed(f"outputs must be a list of output names, got {outputs!r}")
    args = (
        str(nb.resolve()),
        code_digest(nb),
        dict(parameters or {}),
        list(outputs) if outputs is not None else None,
        output_path,
        kernel,
        timeout,
        cwd,
    )
    if current_workflow() is None:
        return run_notebook_task(*args)
    t = task(name=name or nb.stem.replace("-", "_").replace(".", "_"), retries=retries, executor="thread")(
        run_notebook_task
    )
    return t(*args)


class NotebookEntry:
    """``nf.notebook``: the function above, under a name the package also uses for its
    notebook room (``nbflow.notebook``, the magics and views).

    Python binds a subpackage as an attribute of its parent, so ``nbflow.notebook`` cannot
    be both a plain function and the subpackage.  This object is both: calling it is
    :func:`notebook`; any other attribute is the subpackage's (``nbflow.notebook.show``,
    ``nbflow.notebook.register_if_ipython`` keep working).
    """

    def __init__(self, package: Any) -> None:
        object.__setattr__(self, "_package", package)
        object.__setattr__(self, "__doc__", notebook.__doc__)
        object.__setattr__(self, "__wrapped__", notebook)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return notebook(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._package, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._package, name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._package)) | {"__call__"})

    def __repr__(self) -> str:
        return "<nf.notebook: run a notebook as a task (also the nbflow.notebook package)>"


def _outputs_by_reference(value: Any) -> Any:
    """An upstream notebook's outputs arrive in a parameter as a reference to its batch run
    (see :func:`notebook`): ``nf.param`` gives the outputs themselves."""
    if isinstance(value, dict) and set(value) == {MARKER}:
        from .outputs import outputs

        batch = value[MARKER]
        return NotebookOutputs(outputs(batch), batch, "", "")
    return value


add_value_hook(_outputs_by_reference)
