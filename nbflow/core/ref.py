"""``nf.Ref``: the lazy handle a task call returns while a workflow is being traced.

A Ref is one slotted object per node of the graph: its index (nodes are integers), the task
it calls, its arguments (which may hold other Refs), the indexes it waits for, its key
(``"clean-0"``) and its kind (:mod:`nbflow.core.kinds`).  It is shared vocabulary: the engine
builds and runs Refs, the checks and the store read them.  Using a Ref as if it were its
value raises :class:`~nbflow.core.errors.RefUsageError` saying what to do instead.
"""

from __future__ import annotations

from types import FrameType
from typing import TYPE_CHECKING, Any

from .errors import RefAttributeError, RefUsageError, WorkflowDefinitionError
from .kinds import TASK, UNDO
from .userraise import Refusal, attribute_name
from .usertb import mark_for_display


def _tracing(ref: Ref) -> bool:
    return bool(getattr(ref.wf, "tracing", False))


def _refuse(what: str) -> Refusal:
    """A use of a Ref that is a mistake whenever it happens."""
    return Refusal(lambda ref: ref._misuse(what))


def _not_run_yet(ref: Ref) -> RefUsageError | None:
    if ref.wf.last_run is not None:
        return None
    if getattr(ref.wf, "_last_run", None) is not None:  # it ran; nothing holds that run now
        return mark_for_display(RefUsageError(
            f"{ref.key} has no value any more: nothing holds the latest run of workflow "
            f"{ref.wf.name!r}, so its results were freed with it. Keep the run "
            "(run = wf.run()) and use run[ref], or ref.result() while you hold it."
        ))
    return mark_for_display(RefUsageError(
        f"{ref.key} has no value yet: the workflow {ref.wf.name!r} has not run. "
        "Call wf.run() first (a %%workflow cell does this for you)."
    ))


def _iteration(ref: Ref) -> RefUsageError | None:
    nout = getattr(getattr(ref.task, "spec", None), "nout", None)
    if nout and _tracing(ref):
        return None
    return ref._misuse("in a loop or unpacking (use task.map to fan out over it, or declare "
                       "@nf.task(nout=N) for a task that returns N values)")


def _attribute(ref: Ref, frame: FrameType | None) -> AttributeError:
    # The name is read off the user's bytecode (the descriptor is not told it); a probe
    # through getattr()/hasattr() gets the general message, still an AttributeError.
    name = attribute_name(frame)
    if name is None:  # getattr()/hasattr(): mostly libraries probing; kept cheap
        return RefAttributeError(f"{ref.key} is a Ref (a handle on a task's value), not the value: "
                                 "the value's attributes exist inside a task that takes the Ref, "
                                 "or through ref.result() after the run")
    if name.startswith("_"):  # protocols probed by libraries (_repr_html_, ...)
        return AttributeError(name)
    return ref._misuse(f"as if it were the value (.{name})", RefAttributeError)  # type: ignore[return-value]


def _in_a_string(ref: Ref) -> RefUsageError | None:
    if not _tracing(ref):
        return None  # after the block, str(ref) is its repr
    return ref._misuse(
        "in a string (str(), an f-string, format())",
        fix="Build the string inside a task, or with nf.fmt(\"...{}\", ref), which formats "
            "it when the workflow runs.")


_ARITH = _refuse("in arithmetic or a comparison (+, -, *, /, <, ...; sum() too)")


class Ref:
    """A lazy handle on the value a task call will produce.

    Pass it to other tasks (directly or nested in lists, tuples and dicts).  After a run,
    ``ref.result()`` or ``run[ref]`` gives the value.
    """

    __slots__ = ("args", "deps", "index", "key", "kind", "kwargs", "nested", "task", "wf")

    def __init__(
        self,
        wf: Any,
        index: int,
        task: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        deps: list[int],
        key: str,
        nested: int,
        kind: str = TASK,
    ) -> None:
        self.wf = wf
        self.index = index
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.deps = deps  # indexes of the nodes this one waits for (data and ordering)
        self.key = key
        self.nested = nested  # 0: no refs in args, 1: refs at top level, 2: refs nested
        self.kind = kind

    @property
    def name(self) -> str:
        """The task name (``"clean.map"`` for the node that collects a map's results)."""
        if self.kind == TASK or self.kind == UNDO:
            return str(self.task.spec.name)
        return self.key.rpartition("-")[0]  # "clean.map-0" -> "clean.map", "branch-0" -> "branch"

    def after(self, *refs: Ref) -> Ref:
        """Also wait for ``refs`` (ordering only: their values are not passed).  Returns self."""
        for r in refs:
            if type(r) is not Ref:
                raise RefUsageError(f"{self.key}.after() takes Refs, got {type(r).__name__}")
            if r.wf is not self.wf:
                raise RefUsageError(foreign_ref_message(r, self.wf))
            if r is self:
                raise WorkflowDefinitionError(f"{self.key}.after({self.key}): a task cannot wait for itself")
            if r.index not in self.deps:
                self.deps.append(r.index)
        return self

    def _misuse(
        self, what: str, cls: type[RefUsageError] = RefUsageError, fix: str | None = None
    ) -> RefUsageError:
        tracing = getattr(self.wf, "tracing", False)
        if tracing:
            return cls(
                f"{self.key} is a Ref, a stand-in for a value that exists only once the workflow "
                f"runs, so it cannot be used {what} while tracing. "
                + (fix or "Do this inside a task instead: pass the Ref to a task as an argument "
                   "(the task receives the real value), or use ref.result() after the run.")
            )
        # Outside a block nothing trims the traceback on the way up: the views do.
        return mark_for_display(self._outside(what, cls))

    def _outside(self, what: str, cls: type[RefUsageError]) -> RefUsageError:
        run = getattr(self.wf, "last_run", None)
        if run is None:
            why = f"the workflow {self.wf.name!r} has not run yet"
            fix = "run it first (wf.run(), or a %%workflow cell)"
        else:
            try:
                run[self]
            except Exception as e:  # TaskNotFinished: it failed, was skipped or cancelled
                why = f"it has no value in run {run.id}: {e}"
                fix = "fix the cause and run the workflow again"
            else:
                why = f"its value from run {run.id} is available"
                fix = "use ref.result() (or run[ref]) to get it"
        return cls(f"{self.key} is a Ref (a handle on a task's value), not the value, so it cannot "
                   f"be used {what}: {why}; {fix}.")

    # -- uses of a Ref as if it were its value ---------------------------------------------
    # Each of these raises a RefUsageError from C (:class:`~.userraise.Refusal`), so that the
    # innermost frame of its traceback is the user's line even when the user catches it and
    # prints it: no frame of this file is on it.  (The type checker sees plain methods.)

    def _result(self) -> Any:
        """The value from the latest run of this ref's workflow."""
        return self.wf.last_run[self]

    def _outputs(self) -> Any:
        return iter([self[k] for k in range(self.task.spec.nout)])  # a, b = split(df) with nout=2

    def _getitem(self, key: Any) -> Ref:
        """While tracing: a small derived node whose value is ``value[key]`` (as dask.delayed)."""
        return self.wf._add_getitem(self, key)  # type: ignore[no-any-return]

    def _plain_format(self, spec: str) -> str:
        return str(self) if not spec else format(str(self), spec)

    def __repr__(self) -> str:
        return f"<Ref {self.key}>"

    if TYPE_CHECKING:
        def result(self) -> Any: ...
        def __getitem__(self, key: Any) -> Ref: ...
        def __iter__(self) -> Any: ...
        def __bool__(self) -> bool: ...
        def __len__(self) -> int: ...
        def __index__(self) -> int: ...
        def __contains__(self, item: Any) -> bool: ...
        def __getattr__(self, name: str) -> Any: ...
    else:
        result = Refusal(_not_run_yet, _result)
        __getitem__ = Refusal(lambda r: None if _tracing(r) else r._misuse("with [...] (indexing)"), _getitem)
        __iter__ = Refusal(_iteration, _outputs)
        __bool__ = _refuse("as a condition")
        __len__ = _refuse("with len()")
        __index__ = __float__ = __int__ = _refuse("as a number")
        __contains__ = _refuse("with `in`")
        __getattr__ = Refusal(_attribute, frame=True)
        __str__ = Refusal(_in_a_string, __repr__)
        __format__ = Refusal(_in_a_string, _plain_format)

        __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _ARITH
        __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _ARITH
        __pow__ = __rpow__ = __matmul__ = __rmatmul__ = __divmod__ = __rdivmod__ = _ARITH
        __and__ = __rand__ = __or__ = __ror__ = __xor__ = __rxor__ = _ARITH
        __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = _ARITH
        __lt__ = __le__ = __gt__ = __ge__ = _ARITH
        __neg__ = __pos__ = __abs__ = __invert__ = __round__ = __complex__ = _ARITH
    # (== and hash stay identity: Refs are dict keys and set members inside nbflow)

    # -- libraries probing a foreign object ----------------------------------------------
    # numpy looks these up on the type (so __getattr__ never sees them): np.asarray(ref),
    # np.mean(ref), np.float64(1) + ref and every ufunc end here instead of building a
    # one-element object array or failing with numpy's own message.  (They are called from
    # numpy's and pandas' code, whose frames stay on the traceback anyway; the views trim
    # those, see :mod:`.usertb`.)

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._misuse("as an array (numpy)")

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        raise self._misuse(f"in numpy's {getattr(ufunc, '__name__', ufunc)}()")

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise self._misuse(f"in numpy's {getattr(func, '__name__', func)}()")

    @property
    def _typ(self) -> str:
        # pandas tells its own objects apart by ``getattr(obj, "_typ")`` (its ABCDataFrame
        # checks): pd.concat([ref, ref]), pd.merge(ref, ...) and friends ask this first.
        # Only AttributeError is swallowed there, so a RefUsageError reaches the user.
        raise self._misuse("as a pandas object (pd.concat, pd.merge, pd.DataFrame(...))")


def foreign_ref_message(r: Ref, wf: Any) -> str:
    """The message for a Ref used in a workflow other than the one that made it."""
    return (
        f"{r.key} belongs to workflow {r.wf.name!r}, not to {wf.name!r}; a Ref cannot cross "
        "workflows. Call the task again inside this workflow, or pass the value (ref.result())."
    )


def is_task(obj: Any) -> bool:
    """Is ``obj`` an ``@nf.task``?  Tasks mark their class with ``__nbflow_task__``, so rooms
    that must recognise one (the store's hashing and fingerprints, rerun=) need not import
    the engine."""
    return getattr(type(obj), "__nbflow_task__", False) is True
