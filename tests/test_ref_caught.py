"""A RefUsageError the user *catches* has the user's line as its last frame.

Nothing trims an exception the user catches (the ``with`` block, IPython and the excepthook
only trim what reaches them), so the error must be raised with no frame of nbflow on it:
``traceback.extract_tb(e.__traceback__)[-1]`` is the user's line and ``format_exc()`` names
no nbflow file, inside a workflow block (tracing) and after it.  Uses that are allowed
(unpacking with ``nout=``, indexing while tracing, ``str()`` after the block, ``hasattr``)
still work.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import Any

import pytest

import nbflow as nf

NBFLOW_DIR = os.path.dirname(nf.__file__)


@nf.task
def load(n: int) -> list[int]:
    return list(range(n))


@nf.task(nout=2)
def split(xs: list[int]) -> tuple[list[int], list[int]]:
    return xs[:1], xs[1:]


USES: dict[str, Callable[[Any], Any]] = {
    "if": lambda r: 1 if r else 0,
    "len": lambda r: len(r),
    "ref + 1": lambda r: r + 1,
    "1 - ref": lambda r: 1 - r,
    "ref ** 2": lambda r: r ** 2,
    "ref < 3": lambda r: r < 3,
    "-ref": lambda r: -r,
    "round": lambda r: round(r, 2),
    "in": lambda r: 3 in r,
    "list": lambda r: list(r),
    "float": lambda r: float(r),
    "int": lambda r: int(r),
    "sum": lambda r: sum([r, r]),
    "method": lambda r: r.dropna(),
    "attribute": lambda r: r.shape,
}


def _caught(use: Callable[[Any], Any], ref: Any) -> tuple[BaseException, str]:
    try:
        use(ref)
    except nf.RefUsageError as e:
        return e, traceback.format_exc()
    raise AssertionError("no RefUsageError")


def _check(exc: BaseException, text: str) -> None:
    last = traceback.extract_tb(exc.__traceback__)[-1]
    assert last.filename == __file__ and last.name == "<lambda>", last
    assert NBFLOW_DIR not in text, text


@pytest.mark.parametrize("use", list(USES))
def test_caught_while_tracing_the_last_frame_is_the_users(use: str) -> None:
    with nf.Workflow("caught"):
        r = load(3)
        exc, text = _caught(USES[use], r)
    _check(exc, text)
    assert "load-0 is a Ref" in str(exc) and "only once the workflow runs" in str(exc)


@pytest.mark.parametrize("use", list(USES))
def test_caught_after_the_block_the_last_frame_is_the_users(use: str) -> None:
    with nf.Workflow("after") as wf:
        r = load(3)
    wf.run()
    exc, text = _caught(USES[use], r)
    _check(exc, text)
    assert "use ref.result() (or run[ref]) to get it" in str(exc)


def test_the_attribute_name_is_in_the_message() -> None:
    with nf.Workflow("names"):
        r = load(3)
        exc, _ = _caught(USES["method"], r)
        assert "(.dropna)" in str(exc) and isinstance(exc, nf.RefAttributeError)
        assert not hasattr(r, "shape")  # still an AttributeError for probes
        assert getattr(r, "_repr_html_", None) is None


def test_other_uses_keep_the_users_frame_last() -> None:
    with nf.Workflow("more") as wf:
        r = load(3)
        for use in (lambda x: str(x), lambda x: f"{x}", lambda x: format(x, ">5")):
            exc, text = _caught(use, r)
            _check(exc, text)
    for use in (lambda x: x[0], lambda x: x.result()):
        with nf.Workflow("unrun"):
            x = load(2)
        exc, text = _caught(use, x)
        _check(exc, text)
    assert wf.last_run is None


def test_allowed_uses_still_work() -> None:
    with nf.Workflow("allowed") as wf:
        xs = load(3)
        a, b = split(xs)  # nout=2 unpacking
        first = xs[0]  # indexing while tracing makes a node
    run = wf.run()
    assert run[a] == [0] and run[b] == [1, 2] and run[first] == 0
    assert first.result() == 0
    assert str(xs) == repr(xs) == "<Ref load-0>" and f"{xs:>14}" == "  <Ref load-0>"
    assert nf.Ref.result.__doc__ and "latest run" in nf.Ref.result.__doc__
