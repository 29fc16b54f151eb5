"""Tasks: what ``@nf.task`` makes of a function.

A :class:`Task` wraps a plain function and a frozen :class:`TaskSpec` of options.  Called
outside a workflow it *is* the function (tasks stay unit-testable); called while a
``Workflow`` is being traced it records a node and returns an ``nf.Ref``.  Defining a task
again under the same name (a notebook cell run twice) replaces the registry entry, so the
next workflow traced picks up the new definition.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, overload

from .errors import RefUsageError, WorkflowDefinitionError
from .graph import Ref, _current
from .validation import validate_task_options

EXECUTORS = ("async", "thread", "process", "dask")

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
    "ti": 2**40, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_amount(value: float | int | str, *, what: str = "resource") -> float:
    """Parse a resource amount: a number, or a size such as ``"2GiB"``, ``"512 MB"``."""
    if isinstance(value, bool):
        raise WorkflowDefinitionError(f"{what}: expected a number or a size like '2GiB', got {value!r}")
    if isinstance(value, (int, float)):
        amount = float(value)
    elif isinstance(value, str):
        m = _SIZE.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise WorkflowDefinitionError(
                f"{what}: cannot read {value!r} as an amount; write a number or a size such as "
                "'2GiB', '500MB' or '1.5e9'"
            )
        amount = float(m.group(1)) * _UNITS[unit]
    else:
        raise WorkflowDefinitionError(f"{what}: expected a number or a size like '2GiB', got {value!r}")
    if amount < 0:
        raise WorkflowDefinitionError(f"{what}: amount must not be negative, got {value!r}")
    return amount


def parse_resources(resources: Mapping[str, float | int | str] | None, *, what: str) -> dict[str, float]:
    if not resources:
        return {}
    if not isinstance(resources, Mapping):
        raise WorkflowDefinitionError(
            f"{what}: resources must be a mapping such as {{'memory': '2GiB', 'gpu': 1}}, "
            f"got {type(resources).__name__}"
        )
    return {str(k): parse_amount(v, what=f"{what} resource {k!r}") for k, v in resources.items()}


def _names(value: Iterable[str] | str | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    out = tuple(value)
    for v in out:
        if not isinstance(v, str):
            raise WorkflowDefinitionError(f"{what} must be strings, got {v!r}")
    return out


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """The options of a task.  ``retry_delay`` is the first backoff delay in seconds; each
    further retry doubles it, capped at ``retry_max_delay``, with +-``retry_jitter`` (a
    fraction) of random jitter so that retries of many tasks do not stampede together."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    retries: int = 0
    retry_delay: float = 0.0
    retry_max_delay: float = 60.0
    retry_jitter: float = 0.1
    timeout: float | None = None
    cache: bool = True
    executor: str | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    priority: int = 0
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    compensate: Callable[[Any], Any] | None = None  # undo(output), run when a saga rolls back

    def backoff(self, attempt: int, rand: float) -> float:
        """Delay before retry number ``attempt`` (1-based), given ``rand`` uniform in [0, 1)."""
        base = min(self.retry_delay * 2.0 ** (attempt - 1), self.retry_max_delay)
        return max(0.0, base * (1.0 + self.retry_jitter * (2.0 * rand - 1.0)))


class Task:
    """A function registered as a workflow task (see the module docstring)."""

    __slots__ = ("__dict__", "spec")

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        functools.update_wrapper(self, spec.fn)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def fn(self) -> Callable[..., Any]:
        return self.spec.fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        wf = _current.get()
        if wf is None:
            if args and _has_ref(args, kwargs):
                raise RefUsageError(
                    f"{self.spec.name}() was called with a Ref outside any workflow; pass the "
                    "value instead (ref.result() after the run), or call it inside `with nf.Workflow()`"
                )
            return self.spec.fn(*args, **kwargs)
        return wf._add_call(self, args, kwargs)

    def map(self, items: Iterable[Any] | Ref, /, **kwargs: Any) -> Any:
        """One call per item (passed as the first argument), ``kwargs`` shared by all.

        Inside a workflow this returns one Ref whose value is the list of results; ``items``
        may itself be a Ref to a list, expanded when its value is known.  Outside a workflow
        it returns the list of results.
        """
        wf = _current.get()
        if wf is None:
            return [self.spec.fn(item, **kwargs) for item in items]  # type: ignore[union-attr]
        return wf._add_map(self, items, kwargs)

    def with_options(self, **options: Any) -> Task:
        """A copy of this task with some options changed (not registered under the name)."""
        return Task(_make_spec(self.spec.fn, base=self.spec, **options))

    def __repr__(self) -> str:
        return f"<nf.task {self.spec.name}>"


_REGISTRY: dict[str, Task] = {}


def registry() -> dict[str, Task]:
    """The tasks defined so far, by name (the latest definition of each name)."""
    return dict(_REGISTRY)


def _make_spec(fn: Callable[..., Any], base: TaskSpec | None = None, **options: Any) -> TaskSpec:
    if not callable(fn):
        raise WorkflowDefinitionError(f"@nf.task needs a function, got {fn!r}")
    validate_task_options(fn, options)  # (bad options refused here, naming option and value)
    name = options.pop("name", None) or (base.name if base else getattr(fn, "__name__", None))
    if not name or not isinstance(name, str):
        raise WorkflowDefinitionError(f"cannot name task {fn!r}: pass name='...'")
    what = f"task {name!r}"
    is_async = inspect.iscoroutinefunction(fn)
    retries = options.get("retries", base.retries if base else 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise WorkflowDefinitionError(f"{what}: retries must be a whole number >= 0, got {retries!r}")
    for key in ("retry_delay", "retry_max_delay", "retry_jitter", "timeout"):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise WorkflowDefinitionError(f"{what}: {key} must be a number of seconds >= 0, got {v!r}")
    if options.get("timeout") == 0:
        raise WorkflowDefinitionError(f"{what}: timeout must be > 0 seconds (or None for no limit)")
    executor = options.get("executor", base.executor if base else None)
    if executor is not None and executor not in EXECUTORS:
        raise WorkflowDefinitionError(
            f"{what}: executor must be one of {', '.join(EXECUTORS)} (or None), got {executor!r}"
        )
    if executor == "async" and not is_async:
        raise WorkflowDefinitionError(f"{what}: executor='async' needs an `async def` function")
    if is_async and executor in ("process", "dask"):
        raise WorkflowDefinitionError(
            f"{what}: an `async def` task runs on the event loop; executor={executor!r} needs a "
            "plain `def` function"
        )
    priority = options.get("priority", base.priority if base else 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise WorkflowDefinitionError(f"{what}: priority must be an int, got {priority!r}")
    fields = dict(
        name=name,
        fn=fn,
        is_async=is_async,
        retries=retries,
        executor=executor,
        priority=priority,
    )
    if "resources" in options:
        fields["resources"] = parse_resources(options["resources"], what=what)
    for key in ("reads", "writes", "tags"):
        if key in options:
            fields[key] = _names(options[key], f"{what}: {key}")
    if options.get("compensate") is not None and not callable(options["compensate"]):
        raise WorkflowDefinitionError(f"{what}: compensate must be a function undo(output), got "
                                      f"{type(options['compensate']).__name__}")
    if options.get("compensate") is not None and "cache" not in options:
        # A task that can be undone has a side effect: serving it from the cache would skip
        # the effect, and a rollback would then undo something this run never did.
        options = {**options, "cache": False}
    for key in ("retry_delay", "retry_max_delay", "retry_jitter", "timeout", "cache", "compensate"):
        if key in options:
            fields[key] = options[key]
    unknown = set(options) - set(TaskSpec.__dataclass_fields__) - {"name"}
    if unknown:
        raise WorkflowDefinitionError(f"{what}: unknown option(s) {sorted(unknown)}")
    return replace(base, **fields) if base else TaskSpec(**fields)  # type: ignore[arg-type]


@overload
def task(fn: Callable[..., Any], /) -> Task: ...
@overload
def task(
    *,
    name: str | None = None,
    retries: int = 0,
    retry_delay: float = 0.0,
    retry_max_delay: float = 60.0,
    retry_jitter: float = 0.1,
    timeout: float | None = None,
    cache: bool = True,
    executor: str | None = None,
    resources: Mapping[str, float | int | str] | None = None,
    priority: int = 0,
    reads: Iterable[str] = (),
    writes: Iterable[str] = (),
    tags: Iterable[str] = (),
    compensate: Callable[[Any], Any] | None = None,
) -> Callable[[Callable[..., Any]], Task]: ...
def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a function a workflow task: ``@nf.task`` or ``@nf.task(retries=2, ...)``."""
    if fn is not None:
        if options:
            raise WorkflowDefinitionError("use @nf.task or @nf.task(option=...), not both")
        return _register(Task(_make_spec(fn)))
    def decorate(f: Callable[..., Any]) -> Task:
        return _register(Task(_make_spec(f, **dict(options))))

    return decorate


def _register(t: Task) -> Task:
    _REGISTRY[t.spec.name] = t
    return t


def _has_ref(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return any(type(a) is Ref for a in args) or any(type(a) is Ref for a in kwargs.values())
