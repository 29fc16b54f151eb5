"""How a cache key is built: pure functions of a task's code, inputs and options.

``key = hash(code fingerprint, argument name = input content hash ..., result options)``.
The content hash of an input that is another task's result is that result's hash
(``digests``, filled by the cache as results appear), so a task whose upstream re-ran but
produced an equal value gets the same key (early cutoff).  Nothing here reads or writes the
store; the memo tables only save recomputing a function's fingerprint or signature.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..core.files import File, file_entry
from ..core.ref import Ref
from ..core.remote import Remote, has_remote
from . import hashing
from .fingerprint import CodeFingerprint, code_fingerprint

# Bump to make every existing key miss (a change in how keys or content hashes are built):
# k2, containers are hashed from their items' hashes (hashing.seq_digest).  It is part of the
# key, not of the options, so the miss says "cache key format changed".
KEY_FORMAT = "k2"
OPTIONS_FORMAT = "k1"
# TaskSpec fields that change a task's result, and so belong in its key.  No option of
# today's TaskSpec does (retries, timeouts, executors and resources do not change what a
# function returns); a ``version=`` option, when it exists, is picked up here.
RESULT_OPTIONS = ("version",)
_CONTAINERS = (list, tuple, dict, set, frozenset)


def cache_key(code_digest: str, options: str, inputs: dict[str, str]) -> str:
    """The key a task's result is stored under."""
    return hashing.combine("key", KEY_FORMAT, code_digest, options,
                           *[f"{k}={v}" for k, v in inputs.items()])


def collect_digest(parts: list[str]) -> str:
    """The content hash of a collect (or gather) node's value, the list of its inputs'
    values, from their hashes: the same as the hash of that list as a plain value."""
    return hashing.seq_digest(list, parts)


def _label(name: str, value: Any) -> str:
    """An input's label in a key's parts: a file argument names its path too, so that a
    miss says which file changed."""
    return f"{name} ({value.path})" if type(value) is File else name


def file_reads(spec: Any) -> list[tuple[str, File]]:
    """The ``reads=`` entries of a task that name files, directories or globs."""
    return [(name, f) for name in spec.reads if (f := file_entry(name)) is not None]


def file_products(spec: Any) -> list[tuple[str, File]]:
    """The ``writes=`` entries of a task that name files (asked after it ran): its products.
    An entry is a file when it says ``file:PATH`` or names a path that exists; other
    entries (``"db:sales"``, an abstract resource name) are only names."""
    return [(name, f) for name in spec.writes if (f := file_entry(name)) is not None]


def has_files(ref: Ref) -> bool:
    """Does a task call pass nf.File arguments or declare file reads (content to hash)?"""
    spec = ref.task.spec
    if spec.reads and file_reads(spec):
        return True
    args = list(ref.args) + (list(ref.kwargs.values()) if ref.kwargs else [])
    return any(type(a) is File for a in args)


class KeyBuilder:
    """Key parts of one run's tasks: content hashes of results seen so far, and memo tables.

    ``digests[i]`` is the content hash of node ``i``'s value (None: it has none, and
    ``unhashable[i]`` says why).
    """

    def __init__(self) -> None:
        self.digests: dict[int, str | None] = {}
        self.unhashable: dict[int, str] = {}
        # producer's task key -> content hash of a remote result passed as a plain value
        # (an item of a map over a list of remote results), hashed where it lives
        self.remote_digests: dict[str, str] = {}
        self._code: dict[int, tuple[Any, CodeFingerprint]] = {}
        self._params: dict[int, tuple[Any, list[str], str | None]] = {}
        self._opts: dict[int, tuple[Any, str]] = {}

    def code_of(self, fn: Any) -> CodeFingerprint:
        hit = self._code.get(id(fn))
        if hit is None:
            hit = self._code[id(fn)] = (fn, code_fingerprint(fn))
        return hit[1]

    def param_names(self, fn: Any) -> tuple[list[str], str | None]:
        hit = self._params.get(id(fn))
        if hit is None:
            names: list[str] = []
            var: str | None = None
            try:
                for p in inspect.signature(fn).parameters.values():
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                        names.append(p.name)
                    elif p.kind == p.VAR_POSITIONAL:
                        var = p.name
            except (TypeError, ValueError):
                pass
            hit = self._params[id(fn)] = (fn, names, var)
        return hit[1], hit[2]

    @staticmethod
    def arg_refs(ref: Ref) -> list[int]:
        if ref.nested == 0:
            return []
        out: list[int] = []
        stack: list[Any] = list(ref.args) + (list(ref.kwargs.values()) if ref.kwargs else [])
        while stack:
            a = stack.pop()
            t = type(a)
            if t is Ref:
                out.append(a.index)
            elif ref.nested == 2 and t in _CONTAINERS:
                stack.extend(a.values() if t is dict else a)
        return out

    def input_digest(self, a: Any, nested: int) -> str:
        """The content hash of an argument.  A Ref stands for its node's value and a remote
        result for the value it holds (hashed where it lives); a container holding either
        is hashed from its items' hashes, which is what the same container of plain values
        hashes to (:func:`.hashing.seq_digest`), so a key never depends on where the parts
        of an argument were when it was built."""
        t = type(a)
        if t is Ref:
            d = self.digests.get(a.index)
            if d is None:
                raise hashing.Unhashable(self.unhashable.get(a.index, "no content hash"))
            return d
        if self.remote_digests and has_remote(a):
            return self.remote_digest(a)
        if nested == 2 and t in _CONTAINERS:
            return self._container(a, t, nested)
        return hashing.value_hash(a)

    def remote_digest(self, a: Any) -> str:
        """The content hash of a value that is (or holds) a remote result: the hash its
        value has here, taken where the remote parts live (``remote_digests``)."""
        if isinstance(a, Remote):
            d = self.remote_digests.get(a.key)
            if d is None:
                raise hashing.Unhashable(f"the result of {a.key} has no content hash")
            return d
        return self._container(a, type(a), 2)

    def _container(self, a: Any, t: type, nested: int) -> str:
        if t is dict:
            return hashing.dict_digest([(hashing.value_hash(k), self.input_digest(v, nested))
                                        for k, v in a.items()])
        return hashing.seq_digest(t, [self.input_digest(x, nested) for x in a])

    def options(self, spec: Any) -> str:
        hit = self._opts.get(id(spec))
        if hit is None:
            vals = [f"{n}={getattr(spec, n, None)!r}" for n in RESULT_OPTIONS]
            hit = self._opts[id(spec)] = (spec, hashing.combine(OPTIONS_FORMAT, *vals))
        return hit[1]

    def inputs(self, ref: Ref) -> dict[str, str]:
        """Argument name -> content hash of every input (raises Unhashable, naming it)."""
        names, var = self.param_names(ref.task.spec.fn)
        nested = ref.nested
        digests = self.digests
        out: dict[str, str] = {}
        name = "?"
        try:
            for k, a in enumerate(ref.args):
                name = names[k] if k < len(names) else (f"{var}[{k - len(names)}]" if var else f"arg{k}")
                if type(a) is Ref:
                    d = digests.get(a.index)
                    out[name] = d if d is not None else self.input_digest(a, nested)
                else:
                    out[_label(name, a)] = self.input_digest(a, nested)
            if ref.kwargs:
                for name, a in sorted(ref.kwargs.items()):
                    out[_label(name, a)] = self.input_digest(a, nested)
        except hashing.Unhashable as e:
            e.args = (name, *e.args)
            raise
        spec = ref.task.spec
        if spec.reads:
            for entry, f in file_reads(spec):
                out[f"reads {entry}"] = hashing.FILES.of(f)
        return out
