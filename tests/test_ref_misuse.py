"""A Ref used like its value gives a RefUsageError with the user's line on top.

``pd.concat([ref, ref])``, ``np.mean(ref)``, ``sum([ref, ref])``, ``ref + 1``: pandas and
numpy probe foreign objects through hooks (pandas' ``_typ``, numpy's ``__array__``,
``__array_function__``, ``__array_ufunc__``) and Python through the arithmetic dunders; each
of those raises RefUsageError saying what a Ref is and what to do.  The traceback the user
sees ends at their own line, not in nbflow or pandas: checked in plain Python (a script run
as a subprocess), in pytest's view of the exception, and in a real kernel.
"""

from __future__ import annotations

import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nbflow as nf

sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
import nbharness as h


@nf.task
def load(n: int) -> pd.DataFrame:
    return pd.DataFrame({"x": range(n)})


USES = {
    "pd.concat": lambda r: pd.concat([r, r]),
    "pd.merge": lambda r: pd.merge(r, r, on="x"),
    "np.asarray": lambda r: np.asarray(r),
    "np.mean": lambda r: np.mean(r),
    "np ufunc": lambda r: np.sqrt(r),
    "numpy scalar + ref": lambda r: np.float64(1.0) + r,
    "sum": lambda r: sum([r, r]),
    "ref + 1": lambda r: r + 1,
    "1 - ref": lambda r: 1 - r,
    "ref * 2": lambda r: r * 2,
    "ref < 3": lambda r: r < 3,
    "-ref": lambda r: -r,
    "abs": lambda r: abs(r),
    "in": lambda r: 3 in r,
    "len": lambda r: len(r),
    "iter": lambda r: list(r),
    "float": lambda r: float(r),
    "method": lambda r: r.dropna(),
}


@pytest.mark.parametrize("use", list(USES))
def test_value_uses_of_a_ref_raise_ref_usage_error_saying_what_to_do(use: str) -> None:
    with nf.Workflow("misuse"):
        r = load(3)
        with pytest.raises(nf.RefUsageError) as info:
            USES[use](r)
    msg = str(info.value)
    assert "load-0 is a Ref" in msg
    assert "only once the workflow runs" in msg  # what a Ref is
    assert "task" in msg  # what to do: inside a task


def test_equality_and_hashing_of_refs_stay_identity() -> None:
    # Equality and hashing stay identity: nbflow keeps Refs in dicts and sets.
    with nf.Workflow("identity"):
        r = load(3)
        assert r == r and {r: 1}[r] == 1 and r != load(4)


def test_after_a_failed_run_the_error_says_the_run_has_no_value() -> None:
    @nf.task
    def broken() -> pd.DataFrame:
        raise ValueError("no data")

    with nf.Workflow("after") as wf:
        r = broken()
    wf.run(raise_on_error=False)
    with pytest.raises(nf.RefUsageError, match=r"has no value in run .*fix the cause"):
        pd.concat([r, r])
    with pytest.raises(nf.RefUsageError, match="has no value in run"):
        len(r)


def _last_frame(exc: BaseException) -> traceback.FrameSummary:
    return traceback.extract_tb(exc.__traceback__)[-1]


@pytest.mark.parametrize("use", ["pd.concat", "np.mean", "sum", "ref + 1", "method"])
def test_the_users_frame_is_the_last_one_of_the_traceback(use: str) -> None:
    with pytest.raises(nf.RefUsageError) as info, nf.Workflow("frames"):
        r = load(3)
        USES[use](r)
    last = _last_frame(info.value)
    assert last.filename == __file__
    assert last.name == "<lambda>"  # the line in USES that used the Ref


def test_a_bad_task_call_points_at_the_users_call() -> None:
    with pytest.raises(nf.TaskCallError) as info, nf.Workflow("call"):
        load(1, 2)
    last = _last_frame(info.value)
    assert last.filename == __file__ and "load(1, 2)" in (last.line or "")


SCRIPT = '''\
import numpy as np
import pandas as pd
import nbflow as nf

@nf.task
def load(n):
    return pd.DataFrame({"x": range(n)})

with nf.Workflow("script"):
    df = load(3)
    both = USE
'''


@pytest.mark.parametrize("use", ["pd.concat([df, df])", "np.mean(df)", "df + 1", "load(1, 2)"])
def test_a_plain_script_shows_the_users_line_last(tmp_path: Path, use: str) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT.replace("USE", use))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    frames = [ln for ln in lines if ln.lstrip().startswith('File "')]
    assert frames[-1].strip() == f'File "{script}", line 11, in <module>', out.stderr
    assert "nbflow" not in "".join(frames) and "pandas" not in "".join(frames), out.stderr
    assert lines[-1].startswith(("nbflow.core.errors.RefUsageError", "nbflow.core.errors.TaskCallError"))


def test_in_a_kernel_the_cell_line_is_the_last_frame(tmp_path: Path) -> None:
    nb = h.notebook([
        "import pandas as pd\nimport nbflow as nf\n"
        "@nf.task\ndef load(n):\n    return pd.DataFrame({'x': range(n)})",
        "%%workflow misuse\ndf = load(3)\nboth = pd.concat([df, df])",
        'with nf.Workflow("plain"):\n    df = load(3)\n    shifted = df + 1',
    ])
    h.execute(nb, tmp_path)
    for cell, line in [(nb.cells[1], "both = pd.concat([df, df])"), (nb.cells[2], "shifted = df + 1")]:
        (err,) = h.errors(cell)
        assert err.ename == "RefUsageError", h.text(cell)
        assert "load-0 is a Ref" in err.evalue
        tb = h.ANSI.sub("", "\n".join(err.traceback))
        frames = tb[: tb.rindex(f"{err.ename}: ")].rstrip()
        assert "ref.py" not in frames and "pandas" not in frames, tb
        assert "magics.py" not in frames, tb  # %%workflow's own frames are hidden too
        # the last frame shown is the cell's, pointing at the line that used the Ref
        assert frames.splitlines()[-1].strip().endswith(line), tb


AFTER_RUN = '''\
import numpy as np
import pandas as pd
import nbflow as nf

@nf.task
def load(n):
    return pd.DataFrame({"x": range(n)})

with nf.Workflow("script") as wf:
    df = load(3)
RUN
both = USE
'''


@pytest.mark.parametrize("use, run", [("pd.concat([df, df])", "wf.run()"), ("df + 1", "wf.run()"),
                                      ("np.mean(df)", "wf.run()"), ("df.x", "wf.run()"),
                                      ("df + 1", "pass  # not run yet"), ("df.result()", "pass")])
def test_a_ref_misused_after_the_block_shows_the_users_line_last(tmp_path: Path, use: str, run: str) -> None:
    script = tmp_path / "later.py"
    script.write_text(AFTER_RUN.replace("RUN", run).replace("USE", use))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    frames = [ln for ln in lines if ln.lstrip().startswith('File "')]
    assert frames == [f'  File "{script}", line 12, in <module>'], out.stderr
    assert lines[-1].startswith(("nbflow.core.errors.RefUsageError", "nbflow.core.errors.RefAttributeError"))
    assert "load-0 is a Ref" in lines[-1] or "load-0 has no value yet" in lines[-1]


def test_other_errors_of_a_script_keep_their_whole_traceback(tmp_path: Path) -> None:
    script = tmp_path / "other.py"
    script.write_text("import json\nimport nbflow\njson.loads('{')\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    frames = [ln for ln in out.stderr.splitlines() if ln.lstrip().startswith('File "')]
    assert frames[0].strip() == f'File "{script}", line 3, in <module>'
    assert any("json" in f and "decoder.py" in f for f in frames[1:]), out.stderr


def test_in_a_kernel_a_ref_used_in_a_later_cell_ends_at_the_cell_line(tmp_path: Path) -> None:
    nb = h.notebook([
        "import numpy as np\nimport pandas as pd\nimport nbflow as nf\n"
        "@nf.task\ndef load(n):\n    return pd.DataFrame({'x': range(n)})",
        'with nf.Workflow("later") as wf:\n    df = load(3)\nrun = wf.run()',
        "x = 1\nshifted = df + 1",
        "both = pd.concat([df, df])",
        "m = np.mean(df)",
    ])
    h.execute(nb, tmp_path)
    assert not h.errors(nb.cells[1]), h.text(nb.cells[1])
    for cell, line in [(nb.cells[2], "shifted = df + 1"), (nb.cells[3], "both = pd.concat([df, df])"),
                       (nb.cells[4], "m = np.mean(df)")]:
        (err,) = h.errors(cell)
        assert err.ename == "RefUsageError", h.text(cell)
        assert "load-0 is a Ref" in err.evalue and "use ref.result()" in err.evalue
        tb = h.ANSI.sub("", "\n".join(err.traceback))
        frames = tb[: tb.rindex(f"{err.ename}: ")].rstrip()
        assert "ref.py" not in frames and "pandas" not in frames and "numpy" not in frames, tb
        assert "interactiveshell.py" not in frames, tb
        assert frames.splitlines()[-1].strip().endswith(line), tb
