"""Unit tests of the pieces a cache key is made of: content hashes, serialisation, code
fingerprints."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbflow.store import hashing, serialize
from nbflow.store.fingerprint import code_fingerprint, diff_parts

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=20), st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner),
    st.dictionaries(st.text(max_size=5), inner, max_size=4),
    st.frozensets(st.integers(), max_size=4)), max_leaves=15)


@settings(max_examples=200, deadline=None)
@given(values)
def test_serialise_round_trips_and_hash_is_stable(v):
    assert serialize.loads(serialize.dumps(v)) == v
    assert hashing.value_hash(v) == hashing.value_hash(serialize.loads(serialize.dumps(v)))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=8), max_size=8, unique=True))
def test_sets_hash_independently_of_order(items):
    assert hashing.value_hash(set(items)) == hashing.value_hash(set(reversed(items)))


def test_hashes_distinguish_types_and_values():
    distinct = [None, 0, 0.0, False, "0", b"0", (0,), [0], {0: 0}, {0}, frozenset({0}), 1, -1, 2**70,
                np.int64(0), np.zeros(1), np.zeros(1, dtype="int32"), np.zeros((1, 1))]
    assert len({hashing.value_hash(v) for v in distinct}) == len(distinct)
    assert hashing.value_hash({"a": 1, "b": 2}) != hashing.value_hash({"b": 2, "a": 1})  # order counts


def test_string_hashes_are_the_same_in_another_process():
    """Set hashing must not depend on the per-process salt of str.__hash__."""
    code = "from nbflow.store.hashing import value_hash; print(value_hash({'a', 'b', 'c', 'dd'}))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONHASHSEED=seed)).stdout for seed in ("1", "2")}
    assert outs == {hashing.value_hash({"a", "b", "c", "dd"}) + "\n"}


def test_pandas_hash_covers_values_index_columns_and_dtypes():
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    h = hashing.value_hash(df)
    assert h == hashing.value_hash(df.copy())
    variants = [
        df.assign(a=[1, 2, 4]),
        df.rename(columns={"a": "A"}),
        df.astype({"a": "int32"}),
        df.set_axis([10, 11, 12]),
        df.rename_axis("idx"),
        df[["b", "a"]],
        df.iloc[:2],
    ]
    assert len({h, *(hashing.value_hash(v) for v in variants)}) == len(variants) + 1
    s = df["a"]
    assert hashing.value_hash(s) != hashing.value_hash(s.rename("z"))
    weird = pd.DataFrame({"l": [[1], [2]]})  # unhashable cells: pickled instead
    assert hashing.value_hash(weird) != hashing.value_hash(pd.DataFrame({"l": [[1], [3]]}))


def test_numpy_hash_and_npy_format():
    a = np.arange(12, dtype="float32").reshape(3, 4)
    assert hashing.value_hash(a) == hashing.value_hash(a.copy(order="F"))
    assert hashing.value_hash(a) != hashing.value_hash(a.reshape(4, 3))
    data = serialize.dumps(a)
    assert serialize.format_name(data) == "npy"
    back = serialize.loads(data)
    assert back.dtype == a.dtype and (back == a).all()
    obj = np.array([{"x": 1}, None], dtype=object)
    assert serialize.format_name(serialize.dumps(obj)) == "pickle"
    assert hashing.value_hash(obj) != hashing.value_hash(np.array([{"x": 2}, None], dtype=object))


def test_unhashable_values_raise_a_clear_error():
    import threading

    with pytest.raises(hashing.Unhashable, match="cannot be pickled"):
        hashing.value_hash([1, threading.Lock()])
    with pytest.raises(serialize.SerializationError):
        serialize.dumps(threading.Lock())


def test_digest_verify_and_bad_header():
    d = hashing.digest(b"abc")
    assert hashing.verify(b"abc", d) and not hashing.verify(b"abd", d)
    with pytest.raises(ValueError, match="bad header"):
        serialize.loads(b"garbage")


# -- code fingerprints --------------------------------------------------------------------

LIMIT = 3


def helper(x):
    return x + LIMIT


def uses_helper(x):
    """Docstring."""
    return helper(x) * 2


def uses_numpy(x):
    return np.sum(x)


def test_fingerprint_parts_follow_helpers_globals_and_libraries():
    fp = code_fingerprint(uses_helper)
    assert set(fp.parts) == {"function uses_helper", "function helper", "global LIMIT"}
    assert fp.notes == ()
    assert code_fingerprint(uses_numpy).parts["library numpy"] == np.__version__
    assert code_fingerprint(uses_helper).digest == fp.digest  # deterministic


def test_fingerprint_changes_with_a_global_value(monkeypatch):
    before = code_fingerprint(uses_helper)
    monkeypatch.setattr(sys.modules[__name__], "LIMIT", 4)
    after = code_fingerprint(uses_helper)
    assert before.digest != after.digest
    assert [d[0] for d in diff_parts(before.parts, after.parts)] == ["global LIMIT"]


def test_closures_defaults_and_partials():
    def make(k):
        def inner(x, scale=2):
            return x * k * scale
        return inner

    assert code_fingerprint(make(1)).digest != code_fingerprint(make(2)).digest
    assert "closure k" in code_fingerprint(make(1)).parts
    p1, p2 = functools.partial(uses_helper, 1), functools.partial(uses_helper, 2)
    assert code_fingerprint(p1).digest != code_fingerprint(p2).digest


def test_classes_used_by_a_function_are_fingerprinted():
    class Model:
        def predict(self, x):
            return x + LIMIT

    def use(x):
        return Model().predict(x)

    fp = code_fingerprint(use)
    assert "closure Model" in fp.parts or any(k.startswith("class") for k in fp.parts)
    assert "global LIMIT" in fp.parts  # reached through the method


def test_recursive_functions_terminate():
    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    assert code_fingerprint(fact).digest


def test_builtins_and_stdlib_add_nothing():
    import json

    def f(x):
        return json.dumps(sorted(x)) + str(len(x))

    assert set(code_fingerprint(f).parts) == {"function test_builtins_and_stdlib_add_nothing.<locals>.f"}
