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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, overload

from ..core.errors import RefUsageError, TaskCallError, WorkflowDefinitionError
from ..core.ref import Ref
from ..core.units import parse_amount, parse_resources  # noqa: F401  (re-exported)
from ..core.validation import validate_task_options
from .graph import _current

EXECUTORS = ("async", "thread", "process", "dask")

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
    nout: int | None = None  # the function returns this many values: a, b = split(x) while tracing
    cache_explicit: bool = False  # cache= was given (cache=True caches even nondeterministic code)

    def backoff(self, attempt: int, rand: float) -> float:
        """Delay before retry number ``attempt`` (1-based), given ``rand`` uniform in [0, 1)."""
        base = min(self.retry_delay * 2.0 ** (attempt - 1), self.retry_max_delay)
        return max(0.0, base * (1.0 + self.retry_jitter * (2.0 * rand - 1.0)))


class Task:
    """A function registered as a workflow task (see the module docstring)."""

    __slots__ = ("__dict__", "spec")
    __nbflow_task__ = True  # how other rooms recognise a task (nbflow.core.ref.is_task)

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        functools.update_wrapper(self, spec.fn)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def fn(self) -> Callable[..., Any]:
        return self.spec.fn

    def check_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Refuse, with the task's signature, a call its function cannot take.

        This runs on every task call while tracing, so the function's parameters are read
        once into a :class:`_CallShape` and a valid call costs a few set and length checks;
        only an invalid one goes through ``inspect.Signature.bind`` for its message.
        """
        shape = self.__dict__.get("_shape")
        if shape is None:
            shape = self.__dict__["_shape"] = _CallShape(self.spec.fn)
        if shape.accepts(args, kwargs):
            return
        try:
            shape.sig.bind(*args, **kwargs)  # type: ignore[union-attr]
        except TypeError as e:
            raise TaskCallError(
                f"{self.spec.name}{shape.sig}: {e}. Call the task as its function is defined "
                "(the call was checked while tracing; nothing has run)") from None

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

    def map(self, items: Iterable[Any] | Ref, /, *, on_error: str = "fail", batch: bool | int | None = None,
            **kwargs: Any) -> Any:
        """One call per item (passed as the first argument), ``kwargs`` shared by all.

        Inside a workflow this returns one Ref whose value is the list of results; ``items``
        may itself be a Ref to a list, expanded when its value is known.  Outside a workflow
        it returns the list of results.  ``on_error="skip"`` (a list of items or a Ref to
        one): the value is the results of the items that completed, in item order; failed
        items are still reported (``run.errors()``) but do not fail what comes after.

        ``batch`` groups many small items into one backend call each while keeping results,
        cache entries and failures per item (:mod:`nbflow.engine.batching`): ``None`` (the
        default) chunks adaptively when the map is long and the task a plain ``def`` with no
        timeout, ``True`` always adaptively, ``N`` in chunks of ``N`` items, ``False`` never.
        """
        wf = _current.get()
        if wf is None:
            return [self.spec.fn(item, **kwargs) for item in items]
        return wf._add_map(self, items, kwargs, on_error, batch)

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
    nout = options.get("nout")
    if nout is not None and (isinstance(nout, bool) or not isinstance(nout, int) or nout < 1):
        raise WorkflowDefinitionError(f"{what}: nout must be a whole number >= 1 (or None), got {nout!r}")
    if "cache" in options:
        fields["cache_explicit"] = True
    for key in ("retry_delay", "retry_max_delay", "retry_jitter", "timeout", "cache", "compensate", "nout"):
        if key in options:
            fields[key] = options[key]
    unknown = set(options) - (set(TaskSpec.__dataclass_fields__) - {"fn", "is_async", "cache_explicit"})
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
    nout: int | None = None,
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


# -- call shapes: checking a traced call against the function's signature -----------------

class _CallShape:
    """The parameters of a task's function, read once, for checking traced calls."""

    __slots__ = ("accept", "hi", "lo", "names", "required", "required_kw", "sig", "var_kw")

    def __init__(self, fn: Callable[..., Any]) -> None:
        try:
            self.sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins have none: nothing to check against
            self.sig = None
        self.lo = self.hi = 0
        names: list[str] = []
        accept: set[str] = set()
        required: list[tuple[int, str]] = []
        required_kw: list[str] = []
        self.var_kw = False
        for p in self.sig.parameters.values() if self.sig is not None else ():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                if p.kind == p.POSITIONAL_OR_KEYWORD:
                    accept.add(p.name)
                if p.default is p.empty:
                    required.append((len(names), p.name))
                    self.lo = len(names) + 1
                names.append(p.name)
                self.hi = len(names)
            elif p.kind == p.VAR_POSITIONAL:
                self.hi = 1 << 30
            elif p.kind == p.KEYWORD_ONLY:
                accept.add(p.name)
                if p.default is p.empty:
                    required_kw.append(p.name)
            elif p.kind == p.VAR_KEYWORD:
                self.var_kw = True
        self.names, self.accept = names, accept
        self.required, self.required_kw = required, required_kw

    def accepts(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        if self.sig is None:
            return True
        n = len(args)
        if n > self.hi:
            return False
        if not kwargs:
            return n >= self.lo and not self.required_kw
        names = self.names
        for k in kwargs:
            if k not in self.accept and not self.var_kw:
                return False
            if k in names and names.index(k) < n:  # given positionally and by name
                return False
        for i, name in self.required:
            if i >= n and name not in kwargs:
                return False
        return all(k in kwargs for k in self.required_kw)


# -- tasks nbflow itself adds to graphs -------------------------------------------------


async def _getitem(value: Any, key: Any) -> Any:
    return value[key]


async def _format(template: str, *args: Any, **kwargs: Any) -> str:
    return template.format(*args, **kwargs)


# ``ref[key]`` and ``nf.fmt``: quick, so they run on the event loop; never stored.
GETITEM = Task(_make_spec(_getitem, name="getitem", cache=False, tags=("derived",)))
FORMAT = Task(_make_spec(_format, name="fmt", cache=False, tags=("derived",)))


def fmt(template: str, /, *args: Any, **kwargs: Any) -> Any:
    """``template.format(*args, **kwargs)``, built when the workflow runs.

    Inside a workflow the arguments may be Refs (``nf.fmt("out/{}.csv", n)``): the result is a
    Ref to the string.  Outside a workflow it is the string.
    """
    if not isinstance(template, str):
        raise WorkflowDefinitionError(f"nf.fmt() takes a format string first, got {type(template).__name__}")
    if _current.get() is None:
        return template.format(*args, **kwargs)
    return FORMAT(template, *args, **kwargs)
