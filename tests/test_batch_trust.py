"""What a new user of ``nbflow run`` / ``sweep`` trips over, and what they are now told.

- The batch's terminal carries nbflow's lines only: no "Kernel is running over TCP without
  encryption" from ipykernel (the kernel gets CurveZMQ keys when it supports them).
- A ``-p`` name the notebook never reads (a typo) is refused before a kernel starts, naming
  the close match; a ``--rerun`` name that matched no task is said at the end of the batch.
- A value of the wrong kind for ``nf.param`` (text for a number) fails in the parameters
  cell with the fix, not later inside a task.
- A cell tagged ``raises-exception`` is meant to fail: a batch whose only errors are in such
  cells completed; a later, unexpected error is the one reported.

Real subprocesses of the CLI and real kernels, as in ``test_batch_run.py``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from batch_helpers import cli, query, write_notebook

import nbflow as nf
from nbflow.batch import paramcheck

PARAMS = 'import nbflow as nf\nthreshold = nf.param("threshold", 2.5)\nlabel = nf.param("label", "x")'
FLOW = """
@nf.task
def load(n):
    return list(range(n))

@nf.task
def big(xs, threshold):
    return [x for x in xs if x > threshold]
"""
RUN = "%%workflow small\nxs = load(5)\nys = big(xs, threshold)"


def test_quiet_batch_prints_only_a_warning_for_a_rerun_name_that_matched_nothing(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "p.ipynb", [FLOW, RUN, "print(ys)"], parameters=PARAMS)
    res = cli("run", str(nb), "-q", "-p", "threshold", "1", "--rerun", "bigg", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "without encryption" not in res.stderr  # ipykernel's warning, not the user's business
    assert res.stdout.strip().startswith("b")  # the batch id, as before
    # -q: nothing but the warning (what ipykernel logs itself, e.g. "KeyboardInterrupt caught"
    # after jupyter_client's interrupt, or a traceback of its own shutdown, is in the kernel log)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "--rerun bigg matched no task" in lines[0] and "big, load" in lines[0]
    out = nbformat.read(str(tmp_path / "p.out.ipynb"), as_version=4)
    assert "[2, 3, 4]" in "".join(o.get("text", "") for o in out.cells[-1].outputs)


def test_a_parameter_the_notebook_never_reads_is_refused_before_a_kernel_starts(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "p.ipynb", [FLOW, RUN], parameters=PARAMS)
    res = cli("run", str(nb), "-p", "treshold", "1", cwd=tmp_path)
    assert res.returncode == 2
    assert "never reads the parameter 'treshold' (did you mean 'threshold'?)" in res.stderr
    assert "label, threshold" in res.stderr
    assert not (tmp_path / "p.out.ipynb").exists()
    res = cli("sweep", str(nb), "-p", "threshold", "1", "2", "-p", "lable", "a", "b", cwd=tmp_path)
    assert res.returncode == 2 and "'lable' (did you mean 'label'?)" in res.stderr
    assert query("SELECT COUNT(*) FROM batches")[0][0] == 0  # nothing was started, nothing recorded


def test_declared_parameters_and_the_generous_rule_for_unknown_ones(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "p.ipynb",
        ["%%workflow w --workers 2\nx = f(alpha)", 'beta = nf.param("beta", 1)\nprint(CONFIG["gamma"])'],
        parameters="alpha: float = 0.1\nn = 3",
    )
    assert paramcheck.declared_parameters(nb) == ["alpha", "beta", "n"]
    # a word of any code cell counts (the notebook may read it in its own way); a typo does not
    assert paramcheck.unknown_parameters(nb, ["alpha", "gamma", "CONFIG", "alpah"]) == ["alpah"]


def test_param_refuses_a_value_of_the_wrong_kind_with_the_fix(monkeypatch) -> None:
    from nbflow.params import params as params_mod

    # nf.param remembers what it read for every later run of this process: keep it to this test
    monkeypatch.setattr(params_mod, "_declared", {})
    monkeypatch.setenv("NBFLOW_PARAMS", '{"a": "abc", "b": 42, "c": "yes", "d": 1, "e": [1, 2]}')
    with pytest.raises(nf.NbflowError, match=r"'a' is 'abc' \(text\).*1.5 is a number: pass a number"):
        nf.param("a", 1.5)
    with pytest.raises(nf.NbflowError, match=r"'b' is 42 \(number\).*is text: pass it with -r b"):
        nf.param("b", "x")
    with pytest.raises(nf.NbflowError, match=r"-p c True or -p c False"):
        nf.param("c", False)
    assert nf.param("d", 0.5) == 1  # an int for a float default is a number like any other
    assert nf.param("e", None) == [1, 2] and nf.param("e", (0,)) == [1, 2]  # not checked


EXPECTED = 'raise RuntimeError("meant to fail")'


def _tagged(path: Path, cells: list[tuple[str, bool]]) -> Path:
    nb = nbformat.v4.new_notebook()
    for source, tagged in cells:
        nb.cells.append(nbformat.v4.new_code_cell(
            source, metadata={"tags": ["raises-exception"]} if tagged else {}))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_a_cell_meant_to_fail_does_not_fail_the_batch_but_a_later_error_does(tmp_path: Path) -> None:
    ok = _tagged(tmp_path / "ok.ipynb", [("x = 1", False), (EXPECTED, True), ("print('after', x)", False)])
    res = cli("run", str(ok), "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = nbformat.read(str(tmp_path / "ok.out.ipynb"), as_version=4)
    assert len(out.cells) == 3  # papermill's "An Exception was encountered" banners taken out
    assert "after 1" in "".join(o.get("text", "") for o in out.cells[2].outputs)
    assert query("SELECT status FROM batches")[0][0] == "completed"

    bad = _tagged(tmp_path / "bad.ipynb", [(EXPECTED, True), ("1 / 0", False), ("print('never')", False)])
    res = cli("run", str(bad), "-q", cwd=tmp_path)
    assert res.returncode == 1
    # the unexpected error is the one reported, not the expected one before it
    assert "cell 2 of" in res.stderr and "bad.ipynb failed: ZeroDivisionError" in res.stderr
    assert "meant to fail" not in res.stderr
    status, error = query("SELECT status, error FROM batches WHERE notebook LIKE '%bad.ipynb'")[0]
    assert status == "failed" and error.startswith("ZeroDivisionError")
