"""What a task function's code does that matters to caching, read from its syntax tree.

Two questions, asked by the static checks (findings) and by the store (cache decisions):

* :func:`nondeterministic_calls` — does it call an unseeded source of randomness or the
  clock (``np.random.rand``, ``random.random``, ``time.time``, ``datetime.now``,
  ``uuid.uuid4``, ...)?  Such a task returns different values each run, so serving it
  from the cache silently changes what it means.  A function that takes a ``seed`` (or
  ``random_state``/``rng``) parameter, seeds numpy/random itself, or builds its generator
  with ``np.random.default_rng(<argument or constant>)`` counts as deterministic.
* :func:`mutated_globals` — does it change a global value in place (``HIST.append(x)``,
  ``CONFIG["k"] = v``, ``global N; N += 1``)?  A run reads its tasks' globals once, when it
  starts; a task that changes one makes the next run see a different value.

Names are resolved through the function's globals, so ``import numpy as np`` and
``from numpy import random as npr`` are recognised.  Functions without source (built in a
string, a C function) give no answer (empty lists), never an error.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import types
from typing import Any

# Calls that give a different value on every run (module-qualified, after resolving aliases).
_CLOCK = {
    "time.time", "time.time_ns", "time.monotonic", "time.perf_counter", "time.localtime",
    "time.gmtime", "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.datetime.today",
    "datetime.date.today", "uuid.uuid1", "uuid.uuid4", "os.urandom", "os.getrandom",
}
_RANDOM_MODULES = ("random", "numpy.random", "secrets")
_SEEDERS = {"random.seed", "numpy.random.seed"}
_GENERATOR_FACTORIES = {  # deterministic when given a seed argument
    "numpy.random.default_rng", "numpy.random.RandomState", "random.Random",
    "numpy.random.Generator", "numpy.random.PCG64", "numpy.random.SeedSequence",
}
_SEED_PARAMS = {"seed", "random_state", "rng", "random_seed"}
_MUTATORS = {"append", "extend", "insert", "pop", "popitem", "remove", "clear", "update",
             "setdefault", "add", "discard", "sort", "reverse", "appendleft", "extendleft"}


@functools.lru_cache(maxsize=2048)
def _tree(code: types.CodeType) -> ast.AST | None:
    try:
        src = textwrap.dedent(inspect.getsource(code))
        return ast.parse(src)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None


def _function(fn: Any) -> types.FunctionType | None:
    fn = getattr(getattr(fn, "spec", None), "fn", fn)  # a task: its function
    fn = getattr(fn, "__func__", fn)  # a bound method
    return fn if isinstance(fn, types.FunctionType) else None


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _qualified(parts: list[str], g: dict[str, Any]) -> str | None:
    """``["np", "random", "rand"]`` -> ``"numpy.random.rand"`` through the globals."""
    root = g.get(parts[0])
    if isinstance(root, types.ModuleType):
        return ".".join([root.__name__, *parts[1:]])
    if root is not None and (isinstance(root, type) or callable(root)):
        mod = getattr(root, "__module__", None)
        name = getattr(root, "__qualname__", None) or getattr(root, "__name__", None)
        if mod and name:
            if mod == "mtrand" or mod.startswith("numpy.random"):
                mod = "numpy.random"
            return ".".join([mod, name, *parts[1:]])
    return None


@functools.lru_cache(maxsize=2048)
def _dotted_calls(code: types.CodeType) -> tuple[tuple[tuple[str, ...], bool], ...]:
    """Every call of a dotted name in the function's syntax tree, in the order of
    ``ast.walk``: its name parts and whether it passes any argument.

    Walking the tree is what these questions cost; its result depends on the code alone,
    so it is kept per code object (a run checks every task on every run).  Resolving the
    names depends on the function's globals, which may change between runs: that part is
    done on each call, over this short list."""
    tree = _tree(code)
    if tree is None:
        return ()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts = _dotted(node.func)
            if parts is not None:
                out.append((tuple(parts), bool(node.args or node.keywords)))
    return tuple(out)


def nondeterministic_calls(fn: Any) -> list[str]:
    """The unseeded random or clock calls in ``fn``'s own code, as written (``"np.random.rand"``)."""
    f = _function(fn)
    if f is None:
        return []
    code = f.__code__
    params = set(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
    if params & _SEED_PARAMS:
        return []
    g = f.__globals__
    calls: list[tuple[str, str, bool]] = []
    for parts, has_args in _dotted_calls(code):
        q = _qualified(list(parts), g)
        if q is not None:
            calls.append((".".join(parts), q, has_args))
    seeded = {q.rsplit(".", 1)[0] for _, q, _ in calls if q in _SEEDERS}
    found: list[str] = []
    for written, q, has_args in calls:
        if q in _SEEDERS:
            continue
        if q in _GENERATOR_FACTORIES:
            if not has_args:
                found.append(f"{written}()")
            continue
        module = q.rsplit(".", 1)[0]
        if q in _CLOCK or (module in _RANDOM_MODULES and module not in seeded):
            found.append(written)
    return list(dict.fromkeys(found))


@functools.lru_cache(maxsize=2048)
def _changed_names(code: types.CodeType) -> tuple[tuple[str, bool], ...]:
    """The names the function's code may change, in the order of ``ast.walk``: ``(name,
    True)`` for a name it declares ``global`` and assigns, ``(name, False)`` for a name
    whose value it changes in place (a mutating method call, an item or attribute
    assignment) -- global only if the function's globals say so when asked.  Kept per
    code object, as :func:`_dotted_calls`."""
    tree = _tree(code)
    if tree is None:
        return ()
    declared: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            declared.update(node.names)
    out: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        target = None
        call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        if call and node.func.attr in _MUTATORS:  # type: ignore[attr-defined]
            target = node.func.value  # type: ignore[attr-defined]
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and t.id in declared:
                    out.append((t.id, True))
                elif isinstance(t, (ast.Subscript, ast.Attribute)):
                    target = t.value
        if isinstance(target, ast.Name):
            out.append((target.id, target.id in declared))
    return tuple(out)


def mutated_globals(fn: Any) -> list[str]:
    """Global names whose values ``fn`` changes in place or rebinds (``global`` statements)."""
    f = _function(fn)
    if f is None:
        return []
    code = f.__code__
    local = set(code.co_varnames) | set(code.co_cellvars)
    g = f.__globals__

    def is_global(name: str) -> bool:
        return name not in local and name in g and not isinstance(
            g[name], (types.ModuleType, types.FunctionType, type))

    out = [name for name, declared in _changed_names(code) if declared or is_global(name)]
    return list(dict.fromkeys(out))
