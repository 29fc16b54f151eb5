"""Raise an exception with the user's line as the last frame of its traceback, even when caught.

A Ref used like a value (``if ref:``, ``len(ref)``, ``ref + 1``, ``ref.dropna()``) is a
mistake on the user's line, but Python reaches nbflow through a protocol method (``__bool__``,
``__len__``, ``__add__``, ``__getattr__``) and a ``raise`` in that method leaves the method's
own frame as the innermost entry of the traceback.  :mod:`.usertb` trims it where the error
is *shown* (IPython, ``sys.excepthook``, the workflow's ``with`` block), but a user who
catches the error and prints ``traceback.format_exc()`` would still read nbflow's source
last.  A frame cannot be taken off a traceback from inside it, and the interpreter adds
every Python frame the exception leaves; so the only way for no nbflow frame to be on the
traceback is for the exception to be raised by no Python frame at all.

That is what :class:`Refusal` does.  It is a class attribute that stands for a protocol
method: Python looks the method up (calling the descriptor's ``__get__``, an ordinary call
that *returns*), and gets back a callable built only from C functions that raises the
exception prepared there.  Building the message is Python code that returns normally, so it
leaves no frame; the raise itself happens in C (a finished generator's ``throw``), so the
innermost frame of the traceback is the user's line.  The callable takes and ignores any
positional arguments (``ref + 1`` passes the ``1``).

Only lookups that go through the instance are covered (the interpreter's protocol slots,
``ref.attr``).  Errors raised while a third-party library probes a Ref (pandas' ``_typ``,
numpy's ``__array_function__``) keep that library's frames whatever nbflow does; those are
trimmed where they are shown (:mod:`.usertb`).
"""

from __future__ import annotations

import dis
import functools
import sys
from collections.abc import Callable, Generator
from types import FrameType
from typing import Any, NoReturn


def _finished() -> Generator[None, None, None]:
    yield


_DONE = _finished()
for _ in _DONE:
    pass
# Throwing into a generator that has finished raises the exception at once, in C: no frame.
_THROW = _DONE.throw


def raiser(exc: BaseException) -> Callable[..., NoReturn]:
    """A callable that raises ``exc`` without a Python frame of its own (any positional
    arguments are ignored: ``frozenset().union`` stops at its first iterable, which raises)."""
    return functools.partial(frozenset().union, map(_THROW, (exc,)))  # type: ignore[return-value]


class Refusal:
    """A protocol method that refuses, raising from C (see the module docstring).

    ``make(obj)`` returns the exception to raise, or None when this use is allowed after all
    (a Ref indexed while tracing, iterated with ``nout=``): then ``allowed`` (a plain function
    of the class, or None) is bound to ``obj`` and returned as the method."""

    def __init__(self, make: Callable[..., BaseException | None],
                 allowed: Callable[..., Any] | None = None, *, frame: bool = False) -> None:
        self.make = make
        self.allowed = allowed
        self.frame = frame  # make(obj, frame): the frame that looked the method up

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:  # looked up on the class (help(), inspect): the allowed method, if any
            return self.allowed if self.allowed is not None else self
        exc = self.make(obj, sys._getframe(1)) if self.frame else self.make(obj)
        if exc is None and self.allowed is not None:
            return self.allowed.__get__(obj, owner)
        return raiser(exc if exc is not None else TypeError(self.name))


@functools.lru_cache(maxsize=1024)
def _loaded_name(code: Any, offset: int) -> str | None:
    for ins in dis.get_instructions(code):
        if ins.offset == offset:
            return str(ins.argval) if ins.opname in ("LOAD_ATTR", "LOAD_METHOD") else None
    return None


def attribute_name(frame: FrameType | None) -> str | None:
    """The attribute name ``frame`` is looking up right now (its ``x.name``), or None when it
    is not a plain attribute access (``getattr(x, name)``, a library's probe)."""
    if frame is None:
        return None
    try:
        return _loaded_name(frame.f_code, frame.f_lasti)
    except Exception:  # bytecode this Python's dis cannot read: say less, never fail
        return None
