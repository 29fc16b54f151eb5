"""Bad options are refused up front, before anything runs, naming the option, the value
and what is allowed.

Two entry points, each called in one line by the code that takes the options:

* :func:`validate_task_options` from ``@nf.task`` / ``task.with_options`` (decoration time):
  the function itself (generators, async generators and methods defined in a class body
  are refused: a task must return its value, and a method's ``self`` cannot be traced),
  ``name``, timeouts and delays (finite, not negative), ``cache`` (a bool: ``cache="no"``
  is truthy and used to turn caching *on*), ``resources`` (finite amounts >= 0), and
  ``reads`` / ``writes`` / ``tags`` (a string or strings);
* :func:`validate_run_options` from ``Run`` (and ``wf.run`` for ``raise_on_error``, which the
  Run never sees): the flags are bools, ``rerun`` is tasks, names, keys or Refs, the
  workflow name can be written to the journal (no lone surrogates), resources are finite.

Every error is :class:`InvalidOptionError`, a :class:`~nbflow.WorkflowDefinitionError`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import InvalidOptionError
from .ref import Ref, is_task
from .units import parse_amount

_MISSING = object()


def _bad(where: str, option: str, value: Any, allowed: str) -> InvalidOptionError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return InvalidOptionError(f"{where}: {option}={shown} is not allowed; {option} must be {allowed}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_seconds(where: str, option: str, v: Any, *, positive: bool = False) -> None:
    if v is None:
        return
    if positive and _is_number(v) and v == 0:
        raise _bad(where, option, v, "> 0 seconds (or None for no limit)")
    if not _is_number(v) or not math.isfinite(v) or v < 0:
        what = "> 0" if positive else ">= 0"
        raise _bad(where, option, v, f"a number of seconds {what}, finite (or None)")


def _check_bool(where: str, option: str, v: Any) -> None:
    if v is not _MISSING and not isinstance(v, bool):
        raise _bad(where, option, v, "True or False")


def _check_text(where: str, option: str, v: Any) -> None:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(where, option, v, "text that can be written as UTF-8 (it contains a lone "
                   "surrogate character)") from None


def check_resources(where: str, resources: Any) -> None:
    """Resource mappings: string names, amounts that are sizes or finite numbers >= 0."""
    if resources is None:
        return
    if not isinstance(resources, Mapping):
        raise _bad(where, "resources", resources, "a mapping such as {'memory': '2GiB', 'gpu': 1}")
    for k, v in resources.items():
        if not isinstance(k, str) or not k:
            raise _bad(where, "resources", resources, "keyed by resource names (non-empty strings)")
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise _bad(where, f"resources[{k!r}]", v, "a number >= 0 or a size such as '2GiB'")
        if isinstance(v, (int, float)) and (not math.isfinite(v) or v < 0):
            raise _bad(where, f"resources[{k!r}]", v, "a finite number >= 0 or a size such as '2GiB'")
        if isinstance(v, str):
            amount = parse_amount(v, what=f"{where} resource {k!r}")  # (says what it cannot read)
            if not math.isfinite(amount):
                raise _bad(where, f"resources[{k!r}]", v, "a finite amount")


def _check_names(where: str, option: str, v: Any) -> None:
    if v is None or isinstance(v, str):
        return
    if isinstance(v, (bytes, Mapping)) or not isinstance(v, Iterable):
        raise _bad(where, option, v, "strings (one string or a list of strings)")
    for item in v:
        if not isinstance(item, str):
            raise _bad(where, option, v, "strings (one string or a list of strings)")


def _method_owner(fn: Any) -> str | None:
    """The class a function was defined in (``def`` inside a ``class`` body), if any."""
    parts = getattr(fn, "__qualname__", "").split(".")
    if len(parts) >= 2 and parts[-2] != "<locals>":
        return ".".join(parts[:-1])
    return None


def validate_task_options(fn: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Refuse a function or option ``@nf.task`` cannot work with (see the module docstring)."""
    name = options.get("name", _MISSING)
    shown = name if isinstance(name, str) and name else getattr(fn, "__name__", repr(fn))
    where = f"task {shown!r}"
    if name is not _MISSING and name is not None and (not isinstance(name, str) or not name.strip()):
        raise _bad(where, "name", name, "a non-empty string (or leave it out to use the function's name)")
    if isinstance(name, str):
        _check_text(where, "name", name)
    target = inspect.unwrap(fn) if callable(fn) else fn
    if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
        kind = "an async generator" if inspect.isasyncgenfunction(target) else "a generator"
        raise InvalidOptionError(
            f"{where}: @nf.task got {kind} function; a task must return its value (a generator "
            "would be returned unconsumed). Return a list instead: `return list(...)`")
    if inspect.ismethod(fn):
        raise InvalidOptionError(
            f"{where}: @nf.task got a bound method ({fn.__qualname__}); its object cannot be traced "
            "or cached. Make it a module-level function taking the object's data as arguments")
    owner = _method_owner(target)
    if owner is not None and callable(fn):
        raise InvalidOptionError(
            f"{where}: @nf.task on a method of class {owner}; tasks must be module-level (or "
            "notebook-level) functions, since `self` cannot be traced. Define it outside the "
            "class and pass the data it needs as arguments")
    for key in ("retry_delay", "retry_max_delay", "retry_jitter"):
        if key in options:
            _check_seconds(where, key, options[key])
    if "timeout" in options:
        _check_seconds(where, "timeout", options["timeout"], positive=True)
    _check_bool(where, "cache", options.get("cache", _MISSING))
    if "resources" in options:
        check_resources(where, options["resources"])
    for key in ("reads", "writes", "tags"):
        if key in options:
            _check_names(where, key, options[key])


def _check_rerun(where: str, rerun: Any) -> None:
    if rerun is None:
        return
    def ok(item: Any) -> bool:
        return isinstance(item, (str, Ref)) or is_task(item)

    if ok(rerun):
        return
    allowed = "a task, a task name, a task key or a Ref, or a list of them"
    if isinstance(rerun, (bytes, Mapping)) or not isinstance(rerun, Iterable):
        raise _bad(where, "rerun", rerun, allowed)
    for item in rerun:
        if not ok(item):
            raise _bad(where, "rerun", rerun, allowed + f" (found {type(item).__name__} {item!r})")


def validate_run_options(*, name: Any = _MISSING, workers: Any = None, cache: Any = _MISSING,
                         raise_on_error: Any = _MISSING, continue_on_error: Any = _MISSING,
                         strict: Any = _MISSING, resources: Any = None, rerun: Any = None,
                         on_conflict: Any = _MISSING) -> None:
    """Refuse run options that cannot work (see the module docstring); options not given
    are not checked."""
    where = f"run of workflow {name!r}" if isinstance(name, str) else "run"
    if name is not _MISSING:
        if not isinstance(name, str) or not name:
            raise _bad("run", "workflow name", name, "a non-empty string")
        _check_text("run", "workflow name", name)
        where = f"run of workflow {name!r}"
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise _bad(where, "workers", workers, "a whole number >= 1 (or None)")
    for option, v in (("cache", cache), ("raise_on_error", raise_on_error),
                      ("continue_on_error", continue_on_error), ("strict", strict)):
        _check_bool(where, option, v)
    check_resources(where, resources)
    _check_rerun(where, rerun)
    if on_conflict is not _MISSING and on_conflict not in ("warn", "serialize", "error"):
        raise _bad(where, "on_conflict", on_conflict, "'warn', 'serialize' or 'error'")
