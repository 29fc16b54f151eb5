"""Hypothesis fuzzing: readers of stored bytes and journals, and tracing arguments.

* Random or mutated bytes given to the result decoder, the blob reader and the store
  loader either load a value nbflow itself signed or fail with one of the documented
  errors -- never another exception, never a hang, never code run (a payload that would
  run code creates a marker file; it must never appear).
* Random bytes as a journal file: opening the store gives ``None`` with a warning and
  ``nf.runs()`` a :class:`StoreError`; nothing hangs or crashes.
* Random nested arguments (lists, tuples, dicts, frozensets, namedtuples, dataclasses,
  namespaces, with Refs at random places): tracing refuses exactly the calls where a Ref
  sits inside a container nbflow does not resolve, and every accepted call hands its task
  a structure equal to the expected values with no Ref left anywhere.
"""

from __future__ import annotations

import collections
import dataclasses
import pickle
import tempfile
import types
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbflow as nf
from nbflow.store import StoreError, get_store, hashing, serialize
from nbflow.store.blobs import BlobCorrupt, BlobMissing, BlobStore
from nbflow.store.store import CacheEntry

pytestmark = pytest.mark.timeout(600)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DECODE_ERRORS = (ValueError, BlobCorrupt, BlobMissing, serialize.UnsignedResult)
MARKER = Path(tempfile.gettempdir()) / f"nbflow-fuzz-marker-{id(object())}"


class _Payload:
    def __reduce__(self):
        return (open, (str(MARKER), "w"))


EVIL = pickle.dumps(_Payload())


def _stored_bytes():
    plain = st.one_of(st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=5))
    return plain.map(serialize.dumps)


@st.composite
def _mutated(draw):
    base = bytearray(draw(_stored_bytes()))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(base) - 1))
        base[i] ^= draw(st.integers(1, 255))
    return bytes(base)


@st.composite
def _forged(draw):
    head = draw(st.sampled_from([b"NBF\x01P", b"NBF\x02P", b"NBF\x02N", b"NBF\x01N"]))
    sig = draw(st.binary(min_size=32, max_size=32)) if head[3] == 2 else b""
    return head + sig + EVIL


ANY_BYTES = st.one_of(st.binary(max_size=300), _mutated(), _forged(),
                      st.binary(max_size=40).map(lambda b: b"NBF" + b))


@FUZZ
@given(data=ANY_BYTES)
def test_decoder_never_runs_code_or_crashes(data):
    try:
        value = serialize.loads(data)
    except DECODE_ERRORS:
        pass
    else:  # only bytes nbflow signed for this user load: re-encoding gives the same bytes
        assert serialize.dumps(value)[5 + 32:] == bytes(data)[5 + 32:] or data[4] == ord("N")
    assert not MARKER.exists()


@FUZZ
@given(data=ANY_BYTES, inline=st.booleans())
def test_store_loader_never_runs_code_or_crashes(tmp_path, data, inline):
    blobs = BlobStore(tmp_path)
    key = hashing.digest(data)
    if not inline:
        p = blobs.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    store = type("S", (), {"blobs": blobs, "load": get_store.__globals__["Store"].load})()
    for trust in ("ok", "bad", "unsigned"):
        entry = CacheEntry(key, None, len(data), data if inline else None, trust)
        try:
            serialize.loads(store.load(entry))
        except DECODE_ERRORS:
            pass
    assert not MARKER.exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(min_size=1, max_size=5000),
                      st.binary(max_size=200).map(lambda b: b"SQLite format 3\x00" + b)))
def test_random_journal_bytes_are_damage_not_a_crash(tmp_path, data):
    home = Path(tempfile.mkdtemp(dir=tmp_path))
    home.chmod(0o700)
    (home / "journal.sqlite").write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = get_store(home)
    if store is None:
        with pytest.raises(StoreError):
            nf.runs(home=home)
    else:  # (random bytes that SQLite reads as an empty database: a usable store)
        assert nf.runs(home=home).empty


# -- tracing arguments ---------------------------------------------------------------------

Pair = collections.namedtuple("Pair", "a b")


@dataclasses.dataclass(frozen=True)
class Box:
    x: object
    y: object = 0


@nf.task
def ident(i: int) -> int:
    return i * 100


@nf.task(cache=False)
def capture(x):
    return x


PLAIN = ("list", "tuple", "dict", "frozenset")
OPAQUE = ("pair", "box", "ns")
LEAF = st.one_of(st.integers(-5, 5).map(lambda i: ("int", i)), st.integers(0, 2).map(lambda i: ("ref", i)))


def _tree():
    return st.recursive(
        LEAF,
        lambda kids: st.one_of(
            st.tuples(st.sampled_from(["list", "tuple"]), st.lists(kids, max_size=3)),
            st.tuples(st.just("dict"), st.dictionaries(st.sampled_from("abc"), kids, max_size=3)),
            st.tuples(st.just("frozenset"), st.frozensets(LEAF, max_size=3)),
            st.tuples(st.sampled_from(OPAQUE), st.tuples(kids, kids)),
        ),
        max_leaves=8,
    )


def _build(node, leaf):
    kind, body = node
    if kind in ("int", "ref"):
        return leaf(kind, body)
    if kind == "list":
        return [_build(c, leaf) for c in body]
    if kind == "tuple":
        return tuple(_build(c, leaf) for c in body)
    if kind == "dict":
        return {k: _build(c, leaf) for k, c in body.items()}
    if kind == "frozenset":
        return frozenset(_build(c, leaf) for c in body)
    a, b = (_build(c, leaf) for c in body)
    return {"pair": Pair, "box": Box, "ns": lambda a, b: types.SimpleNamespace(a=a, b=b)}[kind](a, b)


def _hidden(node, inside=False) -> bool:
    kind, body = node
    if kind == "ref":
        return inside
    if kind == "int":
        return False
    kids = body.values() if kind == "dict" else body
    return any(_hidden(c, inside or kind in OPAQUE) for c in kids)


def _no_ref(v) -> bool:
    if type(v) is nf.Ref:
        return False
    if isinstance(v, dict):
        return all(_no_ref(x) for x in v.values())
    if isinstance(v, (list, tuple, frozenset, set)):
        return all(_no_ref(x) for x in v)
    if isinstance(v, types.SimpleNamespace):
        return all(_no_ref(x) for x in vars(v).values())
    if dataclasses.is_dataclass(v):
        return all(_no_ref(getattr(v, f.name)) for f in dataclasses.fields(v))
    return True


@settings(max_examples=120, deadline=None)
@given(tree=_tree())
def test_tracing_resolves_or_refuses_never_leaks_a_ref(tree):
    expected = _build(tree, lambda kind, i: i if kind == "int" else i * 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with nf.Workflow("fuzz") as wf:
                refs = [ident(i) for i in range(3)]
                out = capture(_build(tree, lambda kind, i: i if kind == "int" else refs[i]))
        except nf.RefUsageError as e:
            assert _hidden(tree), f"refused although every Ref is resolvable: {e}"
            return
        assert not _hidden(tree), "a Ref inside a namedtuple/dataclass/namespace was accepted"
        got = wf.run(cache=False)[out]
    assert _no_ref(got)
    assert got == expected
