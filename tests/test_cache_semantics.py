"""The cache, end to end: what hits, what misses, and what the run says about why.

Each "version" of the user's code is a small module written to its own file and imported,
which is what a notebook does with a re-run cell (a new source, a new code object).
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.store import NbflowStoreWarning
from nbflow.store import fingerprint as fp_mod

_counter = itertools.count()


@pytest.fixture
def code(tmp_path: Path):
    """``code(source)`` imports ``source`` as a fresh module and returns it."""
    names: list[str] = []

    def load(source: str, **extra: Any) -> Any:
        name = f"nbf_cell_{next(_counter)}"
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        mod.__dict__.update(extra)
        sys.modules[name] = mod
        names.append(name)
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        return mod

    yield load
    for n in names:
        sys.modules.pop(n, None)


V1 = """
import nbflow as nf

FACTOR = 2

def helper(x):
    return x * FACTOR

@nf.task
def load(n):
    return list(range(n))

@nf.task
def clean(xs):
    return [x for x in xs if x % 2 == 0]

@nf.task
def report(xs):
    return sum(helper(x) for x in xs)
"""


def etl(m: Any, n: int = 10) -> tuple[nf.Workflow, dict[str, nf.Ref]]:
    with nf.Workflow("etl") as wf:
        d = m.load(n)
        c = m.clean(d)
        r = m.report(c)
    return wf, {"load": d, "clean": c, "report": r}


def states(run: nf.Run) -> dict[str, tuple[bool, str]]:
    df = run.tasks
    return {k: (bool(c), r) for k, c, r in zip(df["key"], df["cached"], df["reason"], strict=True)}


def test_first_run_misses_second_run_hits_everything(code):
    m = code(V1)
    wf, refs = etl(m)
    first = wf.run()
    assert states(first) == {k: (False, "never ran") for k in ("load-0", "clean-0", "report-0")}
    assert first[refs["report"]] == 40
    wf, refs = etl(m)
    second = wf.run()
    assert all(c for c, _ in states(second).values())
    assert {r for _, r in states(second).values()} == {"code and inputs unchanged"}
    assert second[refs["report"]] == 40
    events = [e for e in second.events if isinstance(e, nf.core.events.TaskCompleted)]
    assert events and all(e.cached for e in events)


COSMETIC = '''
import nbflow as nf
# a new comment at the top shifts every line number


FACTOR = 2


def helper(x):
    """Now with a docstring."""
    return x*FACTOR   # and a comment


@nf.task
def load(n):
    # comment
    return list(
        range(n)
    )

@nf.task
def clean(xs):
    """Keep the even ones."""
    return [x
            for x in xs
            if x % 2 == 0]

@nf.task
def report(xs):
    return sum(helper(x) for x in xs)  # trailing comment
'''


def test_cosmetic_edits_hit(code):
    wf, _ = etl(code(V1))
    wf.run()
    wf, refs = etl(code(COSMETIC))
    run = wf.run()
    assert all(c for c, _ in states(run).values()), states(run)
    assert run[refs["report"]] == 40


def test_body_edit_misses_that_task_and_its_descendants(code):
    wf, _ = etl(code(V1))
    wf.run()
    wf, refs = etl(code(V1.replace("x % 2 == 0", "x % 3 == 0")))
    run = wf.run()
    s = states(run)
    assert s["load-0"] == (True, "code and inputs unchanged")
    assert s["clean-0"] == (False, "code of clean changed")
    assert s["report-0"] == (False, "input xs changed")
    assert run[refs["report"]] == 2 * (0 + 3 + 6 + 9)


def test_helper_edit_misses_its_callers_only(code):
    wf, _ = etl(code(V1))
    wf.run()
    wf, refs = etl(code(V1.replace("return x * FACTOR", "return x * FACTOR + 1")))
    run = wf.run()
    s = states(run)
    assert s["load-0"][0] and s["clean-0"][0]
    assert s["report-0"] == (False, "code of report changed (function helper)")
    assert run[refs["report"]] == 40 + 5
    ex = run.explain(refs["report"])
    assert not ex.cached
    assert [c[0] for c in ex.changes] == ["code: function helper"]
    assert "function helper" in str(ex)


def test_global_value_edit_misses_its_users(code):
    wf, _ = etl(code(V1))
    wf.run()
    wf, refs = etl(code(V1.replace("FACTOR = 2", "FACTOR = 3")))
    run = wf.run()
    assert states(run)["report-0"] == (False, "code of report changed (global FACTOR)")
    assert run[refs["report"]] == 60


def test_helper_in_another_module_is_followed(code):
    helpers = code("def scale(x):\n    return x * 10\n")
    src = "import nbflow as nf\n@nf.task\ndef use(x):\n    return helpers.scale(x)\n"
    m = code(src, helpers=helpers)
    with nf.Workflow("mod") as wf:
        r = m.use(2)
    assert wf.run()[r] == 20
    helpers2 = code("def scale(x):\n    return x * 100\n")
    m2 = code(src, helpers=helpers2)
    with nf.Workflow("mod") as wf:
        r = m2.use(2)
    run = wf.run()
    assert run[r] == 200
    assert states(run)["use-0"] == (False, "code of use changed (function scale)")


def test_same_output_edit_cuts_off_early(code):
    wf, _ = etl(code(V1))
    wf.run()
    same = V1.replace("[x for x in xs if x % 2 == 0]", "[y for y in xs if not y % 2]")
    wf, refs = etl(code(same))
    run = wf.run()
    s = states(run)
    assert s["clean-0"] == (False, "code of clean changed")
    assert s["report-0"] == (True, "inputs unchanged although clean-0 re-ran (early cutoff)")
    assert run[refs["report"]] == 40
    assert "re-ran this run: clean-0" in str(run.explain("report-0"))


def test_input_value_change_is_named(code):
    m = code(V1)
    wf, _ = etl(m, n=10)
    wf.run()
    wf, _ = etl(m, n=12)
    run = wf.run()
    assert states(run)["load-0"] == (False, "input n changed")
    ex = run.explain("load")  # by task name
    assert [c[0] for c in ex.changes] == ["input n"]


def test_never_ran_and_explain_for_a_new_task(code):
    wf, refs = etl(code(V1))
    run = wf.run()
    text = str(run.explain(refs["clean"]))
    assert text.startswith("clean-0 (task clean): ran: never ran")
    assert "nothing stored before" in text


def test_task_with_cache_false_is_never_stored(code, tmp_path):
    secret = "s3cr3t-" + "x" * 40000  # big enough that a stored copy would be a file
    m = code("""
import nbflow as nf

@nf.task(cache=False)
def fetch(token):
    return token[::-1]

@nf.task
def size(s):
    return len(s)
""")
    with nf.Workflow("private") as wf:
        r = m.size(m.fetch(secret))
    run = wf.run()
    assert states(run)["fetch-0"] == (False, "cache off")
    with nf.Workflow("private") as wf:
        r = m.size(m.fetch(secret))
    run = wf.run()
    s = states(run)
    assert s["fetch-0"] == (False, "cache off")
    assert s["size-0"][0], "a downstream task still hits: its input hashes the same"
    assert run[r] == len(secret)
    home = tmp_path / ".nbflow"
    needle = secret[::-1][:64].encode()
    for f in home.rglob("*"):
        if f.is_file():
            assert needle not in f.read_bytes(), f"the cache=False result leaked into {f}"


def test_run_with_cache_false_reads_and_stores_nothing(code):
    m = code(V1)
    wf, _ = etl(m)
    run = wf.run(cache=False)
    assert states(run) == {k: (False, "cache off") for k in ("load-0", "clean-0", "report-0")}
    assert "wf.run(cache=False)" in str(run.explain("clean-0"))
    wf, _ = etl(m)
    assert {r for _, r in states(wf.run()).values()} == {"never ran"}


def test_rerun_forces_tasks_and_descendants(code):
    m = code(V1)
    wf, refs = etl(m)
    wf.run()
    for how in ("clean", "clean-0", m.clean):
        wf, refs = etl(m)
        run = wf.run(rerun=[how])
        assert states(run) == {"load-0": (True, "code and inputs unchanged"),
                               "clean-0": (False, "forced"), "report-0": (False, "forced")}
    wf, refs = etl(m)
    run = wf.run(rerun=[refs["report"]])
    assert [c for c, _ in states(run).values()] == [True, True, False]
    assert "forced    by rerun='report-0'" in str(run.explain("report-0"))
    wf, _ = etl(m)
    with pytest.raises(nf.WorkflowDefinitionError, match="no task or task key 'nope'"):
        wf.run(rerun=["nope"])


def test_unhashable_input_warns_and_runs(code):
    m = code("import nbflow as nf\n@nf.task\ndef use(lock, x):\n    return x + 1\n")
    with nf.Workflow("locks") as wf:
        r = m.use(threading.Lock(), 1)
    with pytest.warns(NbflowStoreWarning, match="input 'lock' cannot be hashed"):
        run = wf.run()
    assert run[r] == 2
    assert states(run)["use-0"] == (False, "input lock cannot be hashed")


def test_unstorable_result_warns_and_downstream_says_why(code):
    m = code("""
import threading
import nbflow as nf

@nf.task
def make():
    return threading.Lock()

@nf.task
def use(lock):
    return lock.locked()
""")
    with nf.Workflow("locks2") as wf:
        r = m.use(m.make())
    with pytest.warns(NbflowStoreWarning) as caught:
        run = wf.run()
    messages = [str(w.message) for w in caught]
    assert any("result of task 'make-0' cannot be stored" in m for m in messages)
    assert any("task 'use-0': input 'lock' cannot be hashed" in m for m in messages)
    # the warning points at the task's definition, not at nbflow's own line
    stored = next(w for w in caught if "cannot be stored" in str(w.message))
    assert (stored.filename, stored.lineno) == (m.make.__wrapped__.__code__.co_filename,
                                                m.make.__wrapped__.__code__.co_firstlineno)
    assert run[r] is False
    assert states(run)["use-0"] == (False, "input lock cannot be hashed")
    assert "not stored" in str(run.explain("make-0"))


def test_map_items_are_cached_individually(code):
    m = code("""
import nbflow as nf

@nf.task
def items(n):
    return list(range(n))

@nf.task
def square(x):
    return x * x
""")

    def build(n: int) -> tuple[nf.Workflow, nf.Ref, nf.Ref]:
        with nf.Workflow("maps") as wf:
            dyn = m.square.map(m.items(n))
            static = m.square.map([1, 2, 3])
        return wf, dyn, static

    wf, dyn, static = build(4)
    run = wf.run()
    assert run[dyn] == [0, 1, 4, 9] and run[static] == [1, 4, 9]
    wf, dyn, static = build(5)
    run = wf.run()
    assert run[dyn] == [0, 1, 4, 9, 16]
    df = run.tasks.set_index("key")
    assert df.loc["items-0", "reason"] == "input n changed"
    assert bool(df.loc["square.map-0[3]", "cached"])  # same item, same code: a hit
    assert df.loc["square.map-0[4]", "reason"] == "never ran"
    assert all(df.loc[[f"square-{i}" for i in range(3)], "cached"])


def test_async_tasks_and_pandas_numpy_results_round_trip(code):
    m = code("""
import numpy as np
import pandas as pd
import nbflow as nf

@nf.task
async def frame(n):
    return pd.DataFrame({"a": np.arange(n), "b": [str(i) for i in range(n)]},
                        index=pd.Index(np.arange(n) * 10, name="idx"))

@nf.task
def arr(df):
    return df["a"].to_numpy().reshape(-1, 2).astype("float32")
""")

    def build() -> tuple[nf.Workflow, nf.Ref, nf.Ref]:
        with nf.Workflow("data") as wf:
            f = m.frame(20000)
            a = m.arr(f)
        return wf, f, a

    wf, f, a = build()
    first = wf.run()
    wf, f, a = build()
    second = wf.run()
    assert all(second.tasks["cached"])
    pd.testing.assert_frame_equal(second[f], first["frame-0"])
    np.testing.assert_array_equal(second[a], first["arr-0"])
    assert second[a].dtype == np.float32


def test_process_backend_results_are_cached(code):
    m = code("import nbflow as nf\n@nf.task(executor='process')\ndef work(x):\n    return x * 3\n")
    with nf.Workflow("proc") as wf:
        r = m.work(7)
    assert wf.run()[r] == 21
    with nf.Workflow("proc") as wf:
        r = m.work(7)
    run = wf.run()
    assert run[r] == 21 and bool(run.tasks["cached"][0])


def test_function_without_source_falls_back_to_bytecode_and_says_so(code, tmp_path):
    m = code(V1)
    Path(m.__file__).unlink()  # the source is gone, the loaded code stays
    import linecache

    linecache.clearcache()
    fp_mod._CODE_MEMO.clear()
    wf, _ = etl(m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = wf.run()
    reason = states(run)["clean-0"][1]
    assert reason.startswith("never ran [")
    assert "source not found; fingerprinted from its bytecode" in reason
    wf, _refs = etl(m)
    assert all(c for c, _ in states(wf.run()).values())


def test_source_edited_on_disk_without_reimport_is_not_trusted(code):
    m = code(V1)
    fp_mod._CODE_MEMO.clear()
    path = Path(m.__file__)
    path.write_text(path.read_text().replace("x % 2 == 0", "x % 5 == 0"))  # not re-imported
    wf, refs = etl(m)
    run = wf.run()
    assert run[refs["clean"]] == [0, 2, 4, 6, 8]  # the loaded code ran
    assert "source on disk differs from the loaded code" in states(run)["clean-0"][1]
    fp = fp_mod.code_fingerprint(m.clean)
    assert any("differs" in n for n in fp.notes)


def test_tasks_frame_has_cached_and_reason_columns(code):
    wf, _ = etl(code(V1))
    df = wf.run().tasks
    assert {"cached", "reason"} <= set(df.columns)
    assert df["cached"].dtype == bool


def test_plan_predicts_hits_misses_and_maybes_without_running(code):
    from nbflow.store import plan

    m = code(V1)
    wf, _ = etl(m)
    assert [r["decision"] for r in plan(wf)] == ["miss", "maybe", "maybe"]
    assert plan(wf)[0]["reason"] == "never ran"
    wf.run()
    wf, _ = etl(m)
    assert [r["decision"] for r in plan(wf)] == ["hit", "hit", "hit"]
    wf, _ = etl(code(V1.replace("x % 2 == 0", "x % 3 == 0")))
    rows = plan(wf)
    assert [r["decision"] for r in rows] == ["hit", "miss", "maybe"]
    assert rows[1]["reason"] == "code of clean changed"
    assert rows[2]["reason"].startswith("depends on clean-0, which will run")
    assert [r["decision"] for r in plan(wf, rerun=["load"])] == ["miss", "miss", "miss"]
    assert {r["reason"] for r in plan(wf, cache=False)} == {"cache off"}
    assert len(nf.store.runs()) == 1  # planning ran nothing


IPYTHON_SCRIPT = r'''
import json
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
out = {}

def cell(src):
    r = shell.run_cell(src)
    r.raise_error()

cell("import nbflow as nf")
cell("def helper(x):\n    return x + 1\n")
cell("@nf.task\ndef step(x):\n    return helper(x) * 2\n")
wf_cell = "with nf.Workflow('cells') as wf:\n    r = step(1)\nrun = wf.run()\n"
cell(wf_cell)
out["first"] = shell.user_ns["run"].tasks["reason"].tolist()
cell(wf_cell)
out["again"] = shell.user_ns["run"].tasks["reason"].tolist()
cell("@nf.task\ndef step(x):\n    # a comment, and other spacing\n    return helper( x )*2\n")
cell(wf_cell)
out["cosmetic"] = shell.user_ns["run"].tasks["reason"].tolist()
cell("def helper(x):\n    return x + 2\n")
cell(wf_cell)
out["helper"] = shell.user_ns["run"].tasks["reason"].tolist()
out["value"] = shell.user_ns["run"][shell.user_ns["r"]]
print(json.dumps(out))
'''


def test_functions_defined_in_ipython_cells(tmp_path):
    """Cells keep their source in linecache: cosmetic edits hit, helper edits miss."""
    import json
    import os
    import subprocess

    script = tmp_path / "cells.py"
    script.write_text(IPYTHON_SCRIPT)
    env = dict(os.environ)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"first": ["never ran"], "again": ["code and inputs unchanged"],
                   "cosmetic": ["code and inputs unchanged"],
                   "helper": ["code of step changed (function helper)"], "value": 6}


def test_branch_and_loop_tasks_are_cached_and_explained(code):
    from nbflow.store import plan

    m = code("""
import nbflow as nf

@nf.task
def load(n):
    return list(range(n))

@nf.task
def big(xs):
    return sum(xs) * 10

@nf.task
def small(xs):
    return sum(xs)

@nf.task
def step(x):
    return x + 3
""")

    def build() -> tuple[nf.Workflow, nf.Ref, nf.Ref]:
        with nf.Workflow("ctl") as wf:
            d = m.load(5)
            v = nf.branch(m.load(1), lambda: m.big(d), lambda: m.small(d))
            w = nf.loop(m.step, 0, until=lambda x: x > 10, max_iter=10)
        return wf, v, w

    wf, v, w = build()
    run = wf.run()
    assert (run[v], run[w]) == (100, 12)
    wf, v, w = build()
    run = wf.run()
    assert (run[v], run[w]) == (100, 12)
    df = run.tasks.set_index("key")
    tasks = df[df["task"].isin(["load", "big", "step"])]
    assert len(tasks) == 7 and tasks["cached"].all()
    assert "resolved by the scheduler" in str(run.explain("branch-0"))
    rows = {r["key"]: r["decision"] for r in plan(wf)}
    assert rows["big-0"] == "hit" and rows["branch-0"] == "maybe"
