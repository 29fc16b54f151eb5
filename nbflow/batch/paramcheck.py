"""Catch the typos of a batch command line that would otherwise go unnoticed.

A mistyped name does not make a notebook fail: ``nbflow run nb.ipynb -p treshold 80``
injects a variable nothing reads, and the notebook computes with its default ``threshold``;
``--rerun clen`` names no task, so nothing is forced to run again.  Both batches would end
``completed`` and look right.  So:

* :func:`check_parameters` refuses, before a kernel starts, a ``-p`` name the notebook
  cannot read: one that is neither assigned in its cell tagged ``parameters``, nor read with
  ``nf.param("NAME", ...)``, nor even a word of any code cell.  The last rule is generous on
  purpose (a notebook may read a parameter in many ways); it only catches names that appear
  nowhere, which is what a typo does.
* :func:`unmatched_rerun` tells, after the batch, which ``--rerun`` names matched no task or
  task key of any workflow run the notebook made (a notebook may run several workflows, and
  each one skips the names it does not have, so only the batch as a whole can tell).
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _code_cells(notebook: Path) -> list[tuple[str, list[str]]]:
    """(source, tags) of every code cell of ``notebook``."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    return [(c.source, list(c.get("metadata", {}).get("tags", []))) for c in nb.cells
            if c.cell_type == "code"]


def _python(source: str) -> ast.Module | None:
    """``source`` parsed as Python, its IPython magic and shell lines left out."""
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def _is_param(func: ast.expr) -> bool:
    """``nf.param`` / ``param`` (however nbflow was imported)."""
    return getattr(func, "attr", None) == "param" or getattr(func, "id", None) == "param"


def declared_parameters(notebook: Path) -> list[str]:
    """The parameters ``notebook`` declares: the names its ``parameters`` cell assigns and the
    names it reads with ``nf.param("NAME", ...)`` (a literal first argument), sorted."""
    names: set[str] = set()
    for source, tags in _code_cells(notebook):
        tree = _python(source)
        if tree is None:
            continue
        if "parameters" in tags:
            names.update(t.id for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
                         for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                         if isinstance(t, ast.Name))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str) and _is_param(node.func)):
                names.add(node.args[0].value)
    return sorted(names)


def unknown_parameters(notebook: Path, names: Iterable[str]) -> list[str]:
    """The ``names`` that ``notebook`` cannot read: not declared, and no word of any code cell."""
    words: set[str] = set(declared_parameters(notebook))
    for source, _tags in _code_cells(notebook):
        words.update(_WORD.findall(source))
    return [n for n in names if n not in words]


def check_parameters(notebook: Path, params: dict[str, Any]) -> None:
    """Raise :class:`~nbflow.batch.runner.BatchError` when a parameter given on the command
    line is one ``notebook`` never reads, naming it, the close matches and the declared ones."""
    unknown = unknown_parameters(notebook, params)
    if not unknown:
        return
    from .runner import BatchError

    declared = declared_parameters(notebook)
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    have = ", ".join(declared) if declared else "none declared"
    what = "parameter" if len(hints) == 1 else "parameters"
    raise BatchError(
        f"{notebook.name} never reads the {what} {' or '.join(hints)}: its parameters are {have}. "
        "Give a name the notebook reads (assigned in its cell tagged 'parameters', or read with "
        "nf.param(\"NAME\", default)); nothing was run")


def unmatched_rerun(store: Any, run_ids: list[str], rerun: list[str]) -> tuple[list[str], list[str]]:
    """``(names of rerun that matched no task or key of those runs, the runs' task names)``."""
    if not rerun or not run_ids:
        return list(rerun or []), []
    marks = ",".join("?" * len(run_ids))
    rows = store.journal.query(
        f"SELECT DISTINCT task, key FROM nodes WHERE run_id IN ({marks})", tuple(run_ids))
    tasks = {t for t, _k in rows if t}
    keys = {k for _t, k in rows}
    return [n for n in rerun if n not in tasks and n not in keys], sorted(tasks)
