"""Code fingerprints: when has a task's code *really* changed?

A task's fingerprint covers what decides its result: the normalised syntax tree of its
function and, transitively, of every user-defined function, class and global value that
code refers to, plus the versions of the libraries it calls.  Editing a helper therefore
invalidates every task that calls it (joblib and Prefect miss this), while comments,
docstrings, formatting, line numbers and a renamed task function do not count (Snakemake
and joblib invalidate on those).

How a function is read:

* **Source.**  ``inspect`` finds the source through the function's code object (also for a
  notebook cell, whose source IPython keeps in ``linecache``).  It is parsed, docstrings
  and the top-level name and decorators are dropped, and ``ast.dump`` without positions
  is hashed.  The source is trusted only if compiling it again gives the code that is
  actually loaded: a module edited on disk but not re-imported would otherwise make the
  key describe code that is not the code running, and a stale result would be filed
  under the new key.
* **Bytecode fallback.**  Without usable source (a builtin-less ``exec``, a lambda inside
  an expression, a mismatch as above) the code object's bytecode, names and constants are
  hashed instead (docstring excluded; line numbers are not in the bytecode).  The
  fingerprint says so in its notes, and ``run.explain`` shows them.
* **References.**  Global names the bytecode loads (including in nested functions,
  lambdas and comprehensions), attribute chains on modules (``helpers.normalize``),
  closure cells and default argument values.  User-defined code (``__main__``, a notebook,
  any module outside the standard library and site-packages) is followed recursively;
  library code contributes its distribution's version; other values contribute their
  content hash (:mod:`nbflow.store.hashing`).

Fingerprints are recomputed for every run (global values may have changed), but the
parsing and compiling per code object is memoised for the life of the process.
"""

from __future__ import annotations

import ast
import builtins
import dis
import functools
import inspect
import os
import sys
import sysconfig
import textwrap
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..core.ref import is_task
from . import hashing

FORMAT = "fp1"  # bump to invalidate every fingerprint when their recipe changes


@dataclass(frozen=True)
class CodeFingerprint:
    """The fingerprint of a task's code: one digest, the parts it is made of, and notes.

    ``parts`` maps a readable label (``"function clean"``, ``"function normalize"``,
    ``"global THRESHOLD"``, ``"library numpy"``) to that part's digest or version, so two
    fingerprints can be compared part by part to say *what* changed.
    """

    name: str
    digest: str
    parts: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def code_fingerprint(fn: Any) -> CodeFingerprint:
    """The fingerprint of ``fn`` (a function, a ``Task``, a partial or other callable)."""
    walker = _Walker()
    name = _label(fn)
    walker.visit(fn, top=True)
    parts = walker.parts
    dig = hashing.combine(FORMAT, *(f"{k}={v}" for k, v in sorted(parts.items())))
    return CodeFingerprint(name, dig, parts, tuple(walker.notes))


def diff_parts(old: dict[str, str], new: dict[str, str]) -> list[tuple[str, str | None, str | None]]:
    """(label, old, new) for every part that differs; None where a side lacks the part."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a != b:
            out.append((k, a, b))
    return out


# -- what is "user code" ------------------------------------------------------------------


def _library_roots() -> tuple[str, ...]:
    paths = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(os.path.realpath(p))
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        paths.add(os.path.realpath(os.path.join(p, "lib")))
    return tuple(sorted(paths))


_LIB_ROOTS = _library_roots()
_LIBRARY_PACKAGES = frozenset({"nbflow"})  # our own code is a library to the user's tasks


@functools.lru_cache(maxsize=4096)
def _module_is_user(modname: str | None) -> bool:
    if modname is None or modname == "__main__":
        return True
    top = modname.partition(".")[0]
    if top in _LIBRARY_PACKAGES or top in sys.stdlib_module_names or top == "builtins":
        return False
    mod = sys.modules.get(modname)
    if mod is None:  # not imported the usual way: treat as the user's (the safe side)
        return True
    file = getattr(mod, "__file__", None)
    if not file:
        return getattr(mod, "__spec__", None) is None  # builtin/frozen modules have a spec
    real = os.path.realpath(file)
    if "site-packages" in real.split(os.sep) or "dist-packages" in real.split(os.sep):
        return False
    return not any(real.startswith(root + os.sep) for root in _LIB_ROOTS)


@functools.lru_cache(maxsize=1024)
def _version(top: str) -> str:
    mod = sys.modules.get(top)
    v = getattr(mod, "__version__", None)
    if isinstance(v, str):
        return v
    try:
        from importlib.metadata import version

        return version(top)
    except Exception:
        return "unknown"


def _label(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if name is None and hasattr(obj, "spec"):
        return str(obj.spec.name)
    return str(name or type(obj).__name__)


# -- per code object: normalised source or bytecode, and the names it loads ----------------


@dataclass(frozen=True)
class _CodeInfo:
    digest: str
    note: str | None
    globals: tuple[str, ...]
    chains: tuple[tuple[str, ...], ...]


_CODE_MEMO: OrderedDict[types.CodeType, _CodeInfo] = OrderedDict()
_CODE_MEMO_MAX = 4096


def _code_info(code: types.CodeType, doc: str | None) -> _CodeInfo:
    info = _CODE_MEMO.get(code)
    if info is not None:
        _CODE_MEMO.move_to_end(code)
        return info
    names, chains = _loaded_names(code)
    digest, note = _source_digest(code)
    if digest is None:
        digest = hashing.combine("bytecode", repr(_code_signature(code, doc)))
    info = _CodeInfo(digest, note, names, chains)
    _CODE_MEMO[code] = info
    if len(_CODE_MEMO) > _CODE_MEMO_MAX:
        _CODE_MEMO.popitem(last=False)
    return info


_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_ATTR_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})


def _loaded_names(code: types.CodeType) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """Global names loaded by ``code`` and its nested code, and attribute chains on them."""
    names: dict[str, None] = {}
    chains: dict[tuple[str, ...], None] = {}
    stack = [code]
    while stack:
        c = stack.pop()
        chain: list[str] | None = None
        for ins in dis.get_instructions(c):
            op = ins.opname
            if op in _GLOBAL_OPS:
                if chain is not None and len(chain) > 1:
                    chains[tuple(chain)] = None
                names[str(ins.argval)] = None
                chain = [str(ins.argval)]
            elif op in _ATTR_OPS and chain is not None:
                chain.append(str(ins.argval))
            elif op in ("CACHE", "PRECALL", "EXTENDED_ARG"):
                continue
            else:
                if chain is not None and len(chain) > 1:
                    chains[tuple(chain)] = None
                chain = None
        if chain is not None and len(chain) > 1:
            chains[tuple(chain)] = None
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return tuple(names), tuple(chains)


def _code_signature(code: types.CodeType, doc: str | None = None) -> tuple[Any, ...]:
    consts: list[Any] = []
    for k in code.co_consts:
        if isinstance(k, types.CodeType):
            consts.append(_code_signature(k))
        elif doc is not None and k is doc:
            consts.append("<doc>")
        else:
            consts.append((type(k).__name__, repr(k)))
    return (code.co_code, code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars, tuple(consts))


def _source_digest(code: types.CodeType) -> tuple[str | None, str | None]:
    """(digest of the normalised AST, None) or (None, why the source cannot be used)."""
    try:
        lines, _ = inspect.getsourcelines(code)
    except (OSError, TypeError, IndexError):
        return None, "source not found; fingerprinted from its bytecode"
    src = textwrap.dedent("".join(lines))
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return None, "source could not be parsed on its own; fingerprinted from its bytecode"
    want = (ast.Lambda,) if code.co_name == "<lambda>" else (ast.FunctionDef, ast.AsyncFunctionDef)
    found = [n for n in ast.walk(tree) if isinstance(n, want)]
    if code.co_name != "<lambda>":
        found = [n for n in found if getattr(n, "name", None) == code.co_name][:1]
    if len(found) != 1:
        return None, "source is ambiguous (several lambdas on one line); fingerprinted from its bytecode"
    if not _compiles_to(src, code):
        return None, (
            "source on disk differs from the loaded code (edited without re-importing?); "
            "fingerprinted from its bytecode"
        )
    node = found[0]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        node.name = ""
        node.decorator_list = []
    _strip_docstrings(node)
    return hashing.combine("ast", ast.dump(node, annotate_fields=False, include_attributes=False)), None


def _strip_docstrings(root: ast.AST) -> None:
    for n in ast.walk(root):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = n.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                n.body = body[1:] or [ast.Pass()]


def _compiles_to(src: str, code: types.CodeType) -> bool:
    """Does compiling ``src`` reproduce ``code`` (ignoring positions)?"""
    if code.co_freevars:  # a closure: compile it inside a function that binds those names
        head = "def __nbflow_outer__():\n"
        head += "".join(f"    {v} = None\n" for v in code.co_freevars)
        src = head + textwrap.indent(src, "    ")
    flags = code.co_flags & _FUTURE_FLAGS
    try:
        mod = compile(src, code.co_filename, "exec", flags=flags, dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    want = _instr_signature(code)
    stack = list(mod.co_consts)
    while stack:
        k = stack.pop()
        if isinstance(k, types.CodeType):
            if k.co_name == code.co_name and _instr_signature(k) == want:
                return True
            stack.extend(k.co_consts)
    return False


# Instructions whose presence or form depends on context the compiler had for the whole
# module (whether a name was imported decides LOAD_METHOD vs LOAD_ATTR, a pushed NULL,
# cache sizes), not on the function's own text.
_SKIP_OPS = frozenset({"CACHE", "PRECALL", "NOP", "RESUME", "EXTENDED_ARG", "PUSH_NULL"})
_OP_ALIASES = {"LOAD_METHOD": "LOAD_ATTR", "CALL_METHOD": "CALL"}
_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)


def _instr_signature(code: types.CodeType) -> tuple[Any, ...]:
    """What ``code`` does, as instructions without positions or module-context details."""
    instrs = list(dis.get_instructions(code))
    index: dict[int, int] = {}
    kept = 0
    for ins in instrs:
        index[ins.offset] = kept
        if ins.opname not in _SKIP_OPS:
            kept += 1
    out: list[Any] = []
    for ins in instrs:
        op = ins.opname
        if op in _SKIP_OPS:
            continue
        if ins.opcode in _JUMPS:
            arg: Any = index.get(ins.argval, -1)
        elif isinstance(ins.argval, types.CodeType):
            arg = _instr_signature(ins.argval)
        else:
            arg = (type(ins.argval).__name__, repr(ins.argval))
        out.append((_OP_ALIASES.get(op, op), arg))
    return (tuple(out), code.co_varnames, code.co_freevars)


def _future_flags() -> int:
    import __future__

    out = 0
    for name in __future__.all_feature_names:
        out |= getattr(__future__, name).compiler_flag
    return out


_FUTURE_FLAGS = _future_flags()


# -- walking references -------------------------------------------------------------------


_WALKED_TYPES = (types.FunctionType, types.MethodType, types.ModuleType, functools.partial, staticmethod,
                 classmethod, property)


class _Walker:
    def __init__(self) -> None:
        self.parts: dict[str, str] = {}
        self.notes: list[str] = []
        self.seen: set[int] = set()

    def visit(self, obj: Any, top: bool = False, name: str | None = None) -> None:
        t = type(obj)
        if t in _WALKED_TYPES or isinstance(obj, type):
            if id(obj) in self.seen:  # functions, classes, modules: once each (and no cycles)
                return
            self.seen.add(id(obj))
        if is_task(obj):
            self.visit(obj.spec.fn, top=top)
            return
        if isinstance(obj, functools.partial):
            self.visit(obj.func, top=top)
            self._value(f"arguments of partial {_label(obj.func)}", (obj.args, obj.keywords))
            return
        if isinstance(obj, types.MethodType):
            self.visit(obj.__func__, top=top)
            self._value(f"object bound to {_label(obj.__func__)}", obj.__self__)
            return
        if isinstance(obj, types.FunctionType):
            self._function(obj, top)
            return
        if isinstance(obj, (staticmethod, classmethod)):
            self.visit(obj.__func__)
            return
        if isinstance(obj, property):
            for f in (obj.fget, obj.fset, obj.fdel):
                if f is not None:
                    self.visit(f)
            return
        if isinstance(obj, type):
            self._class(obj)
            return
        if isinstance(obj, types.ModuleType):
            if not _module_is_user(obj.__name__):
                self._library(obj.__name__)
            return
        if isinstance(obj, types.BuiltinFunctionType):
            self._library(getattr(obj, "__module__", None) or "builtins")
            return
        if callable(obj) and top:  # a callable object as the task itself
            self.visit(type(obj).__call__)
            self._value(f"callable object {_label(obj)}", obj)
            return
        self._value(name or f"value {_label(obj)}", obj)

    def _library(self, modname: str) -> None:
        top = modname.partition(".")[0]
        if top in sys.stdlib_module_names or top in ("builtins", "__future__"):
            return
        self.parts[f"library {top}"] = _version(top)

    def _function(self, fn: types.FunctionType, top: bool) -> None:
        if not top and not _module_is_user(fn.__module__):
            self._library(fn.__module__ or "builtins")
            return
        label = f"function {_label(fn)}"
        info = _code_info(fn.__code__, fn.__doc__)
        self.parts[label] = info.digest
        if info.note:
            self.notes.append(f"{_label(fn)}: {info.note}")
        if fn.__defaults__:
            self._value(f"defaults of {_label(fn)}", fn.__defaults__)
        if fn.__kwdefaults__:
            self._value(f"keyword defaults of {_label(fn)}", fn.__kwdefaults__)
        g = fn.__globals__
        bi = builtins.__dict__
        for n in info.globals:
            if n in g:
                self.visit(g[n], name=f"global {n}")
            elif n not in bi:
                self.parts[f"global {n}"] = "<undefined>"
        for chain in info.chains:
            self._chain(g, chain)
        if fn.__closure__:
            for n, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=False):
                if n == "__class__":
                    continue
                try:
                    v = cell.cell_contents
                except ValueError:  # empty cell
                    continue
                self.visit(v, name=f"closure {n}")

    def _chain(self, g: dict[str, Any], chain: tuple[str, ...]) -> None:
        obj = g.get(chain[0])
        if not isinstance(obj, types.ModuleType) or not _module_is_user(obj.__name__):
            return  # attributes of library modules are covered by the library's version
        for i, attr in enumerate(chain[1:], start=1):
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                self.parts["global " + ".".join(chain[: i + 1])] = "<undefined>"
                return
            if not isinstance(obj, types.ModuleType):
                self.visit(obj, name="global " + ".".join(chain[: i + 1]))
                return

    def _class(self, cls: type) -> None:
        if not _module_is_user(cls.__module__):
            self._library(cls.__module__)
            return
        label = f"class {_label(cls)}"
        members = []
        for k, v in sorted(cls.__dict__.items()):
            if k in ("__dict__", "__weakref__", "__doc__", "__module__", "__qualname__"):
                continue
            members.append(k)
            if isinstance(v, (types.FunctionType, staticmethod, classmethod, property)):
                self.visit(v)
            elif not k.startswith("__"):
                self._value(f"attribute {_label(cls)}.{k}", v)
        bases = [f"{b.__module__}.{b.__qualname__}" for b in cls.__bases__]
        self.parts[label] = hashing.combine("class", *bases, *members)
        for b in cls.__bases__:
            if b is not object:
                self.visit(b)

    def _value(self, label: str, value: Any) -> None:
        try:
            self.parts[label] = hashing.value_hash(value)
        except hashing.Unhashable as e:
            self.parts[label] = f"<unhashable {hashing.describe(value)}>"
            self.notes.append(f"{label} cannot be hashed and is ignored ({e})")
        except RecursionError:
            self.parts[label] = f"<unhashable {hashing.describe(value)}>"
            self.notes.append(f"{label} is too deeply nested to hash and is ignored")


# Hashing a value that is a function (or a task) hashes its code fingerprint: hashing knows
# values, this module knows code, and this is where the two meet (no import cycle).
hashing.set_code_hasher(lambda fn: code_fingerprint(fn).digest)
