"""``nf.param(name, default)``: a notebook's parameters, made explicit.

Where the value comes from, first match wins:

1. the parameters ``nbflow run`` / ``nbflow sweep`` injected (``-p``, ``-f``), which the
   kernel receives as JSON in its environment;
2. a value papermill injected into the notebook's globals (a notebook run with plain
   ``papermill -p``): papermill adds a cell starting ``# Parameters`` that assigns them,
   and a name that cell assigned is taken from the globals;
3. ``default``.

Every parameter read is remembered for this process, and recorded with each workflow run
that starts afterwards (``run_params`` in the store, the ``params`` column of
``nbflow runs``).  A parameter is an ordinary value: a task that uses it (as an argument,
or as a global its code reads) has it in its cache key like any other input, so changing
it re-runs exactly the tasks that depend on it.
"""

from __future__ import annotations

import ast
from typing import Any

from ..core.errors import NbflowError
from . import env


class ParamError(NbflowError):
    """A parameter name that cannot be a Python name, or an injected value of the wrong kind."""


_declared: dict[str, Any] = {}


def declared() -> dict[str, Any]:
    """The parameters read in this process so far (name -> value)."""
    return dict(_declared)


def set_param(name: str, value: Any) -> None:
    """Record ``name = value`` as a parameter of the runs that start from now on."""
    _check_name(name)
    _declared[name] = value


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ParamError(f"a parameter name must be a Python identifier such as 'alpha', got {name!r}")


def _papermill_injected(name: str) -> tuple[bool, Any]:
    """Was ``name`` assigned by papermill's injected ``# Parameters`` cell in this kernel?"""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False, None
    ip = get_ipython()
    if ip is None:
        return False, None
    ns = ip.user_ns
    for source in reversed(ns.get("In", [])[-200:]):
        if not isinstance(source, str) or not source.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return False, None
        names = {
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        if name in names and name in ns:
            return True, ns[name]
        return False, None
    return False, None


# Functions that turn an injected parameter into the value a notebook sees.  The batch room
# adds one (upstream notebook outputs arrive as a reference to their batch run).
_value_hooks: list[Any] = []


def add_value_hook(fn: Any) -> None:
    """Apply ``fn(value) -> value`` to every injected parameter value ``nf.param`` returns."""
    if fn not in _value_hooks:
        _value_hooks.append(fn)


def _resolve(value: Any) -> Any:
    for hook in _value_hooks:
        value = hook(value)
    return value


def param(name: str, default: Any = None) -> Any:
    """The value of parameter ``name`` for this run of the notebook, else ``default``.

    Use it in the cell tagged ``parameters``, e.g. ``alpha = nf.param("alpha", 0.1)``.
    """
    _check_name(name)
    injected = env.injected_params()
    if name in injected:
        value = _resolve(injected[name])
        _check_kind(name, value, default)
    else:
        found, value = _papermill_injected(name)
        if not found:
            value = default
        else:
            _check_kind(name, value, default)
    _declared[name] = value
    return value


def _kind(value: Any) -> str | None:
    """"number", "text" or "flag" for the scalars a command line gives; None for the rest."""
    if isinstance(value, bool):
        return "flag"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    return None


def _check_kind(name: str, value: Any, default: Any) -> None:
    """Refuse an injected value whose kind differs from the default's (a number where the
    notebook expects text, text where it expects a number or True/False).

    The value would otherwise fail much later, deep inside some task (``df.amount > "abc"``),
    or not at all while computing something else (``"0042"`` given as ``-p`` arrives as the
    number 42).  Defaults that are None, containers or objects are not checked; an int for
    a float default (``-p alpha 1``) is a number like any other."""
    want, got = _kind(default), _kind(value)
    if want is None or got is None or want == got:
        return
    fix = {
        "number": f"pass a number, e.g. -p {name} {default!r}",
        "text": f"pass it with -r {name} VALUE, which keeps the value as text",
        "flag": f"pass -p {name} True or -p {name} False",
    }[want]
    raise ParamError(
        f"parameter {name!r} is {value!r} ({got}), but the notebook's default {default!r} is "
        f"{'a ' + want if want != 'text' else 'text'}: {fix}")


def parse_value(text: str) -> Any:
    """A command-line parameter value, parsed as papermill parses ``-p`` values."""
    try:
        from papermill.cli import _resolve_type
    except ImportError:  # papermill is the batch extra; the rule is simple enough to follow
        if text in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[text]
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text
    return _resolve_type(text)


def set_cell_params(ns: dict[str, Any], pairs: list[list[str]]) -> None:
    """``%%workflow -p NAME VALUE``: bind each parameter in the notebook and record it."""
    for name, text in pairs:
        value = parse_value(text)
        set_param(name, value)
        ns[name] = value
