"""The workflow-pattern notebooks (approval routing, ETL), executed in a real kernel with papermill.

``example_notebooks/expense_approval.ipynb`` (approval routing by amount: auto, one manager,
manager and finance in parallel, manager → director → CFO) and
``example_notebooks/etl_validation.ipynb`` (validation gate, branch at 100 valid records,
batched upsert into SQLite with at most two loads at once, idempotent re-run).  Each notebook
asserts its own behaviour in its cells, so a failing ``assert`` fails the execution; these
tests also read what the notebooks printed and wrote, so a notebook that silently did nothing
fails here too.  Parameters are passed the papermill way, and changing one must change the
outcome.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest

papermill = pytest.importorskip("papermill")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "example_notebooks"
EXPENSE = NOTEBOOKS / "expense_approval.ipynb"
ETL = NOTEBOOKS / "etl_validation.ipynb"
KERNEL = "python3"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="session")
def kernel() -> str:
    """The kernel papermill uses; installed for this user only if it is missing."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user", "--name", KERNEL],
                       check=True, capture_output=True)
        assert KERNEL in KernelSpecManager().find_kernel_specs()
    return KERNEL


@pytest.fixture
def execute(kernel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run a notebook with papermill in ``tmp_path/work``; the kernel's store is a temp dir."""
    home = tmp_path / "nbflow-home"
    monkeypatch.setenv("NBFLOW_HOME", str(home))  # papermill starts the kernel with our environment
    work = tmp_path / "work"
    work.mkdir()

    def run(src: Path, **parameters: Any) -> Any:
        out = tmp_path / f"{src.stem}.out.ipynb"
        papermill.execute_notebook(str(src), str(out), parameters=parameters, kernel_name=kernel,
                                   cwd=str(work), progress_bar=False, execution_timeout=240,
                                   iopub_timeout=60)  # a cell's late idle is no failure (nbharness)
        assert not (work / ".nbflow").exists(), "the kernel ignored NBFLOW_HOME"
        assert home.is_dir(), "the runs were not recorded under NBFLOW_HOME"
        return nbformat.read(out, as_version=4)

    return run


def printed(nb: Any) -> str:
    """Everything the code cells printed or showed as text, in order."""
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                parts.append(o.text)
            elif o.output_type in ("execute_result", "display_data"):
                parts.append(str(o.get("data", {}).get("text/plain", "")) + "\n")
            elif o.output_type == "error":  # papermill raises first; this is only a safety net
                raise AssertionError(f"{o.ename}: {o.evalue}")
    return "".join(parts)


@pytest.mark.parametrize("path", [EXPENSE, ETL], ids=lambda p: p.stem)
def test_notebook_is_stored_clean_with_a_parameters_cell(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "stored with outputs"
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 5
    assert any("assert " in c.source for c in nb.cells if c.cell_type == "code")


# -- expense approval ---------------------------------------------------------------------

def decisions(tmp_path: Path) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "expenses" / "decisions.csv", index_col="claim")


def test_expense_approval_routes_every_band_and_edge(execute, tmp_path: Path) -> None:
    nb = execute(EXPENSE, output_dir=str(tmp_path / "expenses"))
    text = printed(nb)
    for marker in ("decisions ok", "approval tasks ok", "12 claims: 9 approved, 3 rejected",
                   "expense-approval: completed"):
        assert marker in text, marker
    # the decision table, as printed by the notebook: one line per claim
    assert re.search(r"EXP-004\s+1,000\.00\s+manager\s+manager ✓\s+approved", text)
    assert re.search(r"EXP-010\s+50,000\.00\s+sequential\s+manager ✓ → director ✓ → cfo ✗\s+rejected\s+cfo",
                     text)
    assert "approval tasks: 72 in the graph, 18 asked, 54 skipped" in text

    table = decisions(tmp_path)
    assert len(table) == 12 and table.index.is_unique
    band_at = table.set_index("amount")["band"]
    assert band_at[999.99] == "auto" and band_at[1_000.00] == "manager"
    assert band_at[9_999.99] == "manager" and band_at[10_000.00] == "parallel"
    assert band_at[49_999.99] == "parallel" and band_at[50_000.00] == "sequential"
    assert set(table["band"]) == {"auto", "manager", "parallel", "sequential"}
    below = table[table["amount"] < 1_000]
    assert (below["decision"] == "approved").all() and (below["approvals"] == "(none needed)").all()
    top = table[table["amount"] >= 50_000]
    assert len(top) == 3 and (top["decision"] == "rejected").all() and (top["decided_by"] == "cfo").all()
    middle = table[(table["amount"] >= 1_000) & (table["amount"] < 50_000)]
    assert (middle["decision"] == "approved").all()
    assert (table.loc[table["band"] == "parallel", "approvals"] == "manager ✓ + finance ✓").all()


def test_expense_parameters_change_the_decisions(execute, tmp_path: Path) -> None:
    # Raise the parallel limit and let the manager reject on timeout: the 50,000 claim now
    # needs manager and finance (no CFO), and the manager's "no" rejects every claim that needs
    # one -- the sequential chain stops there, so no director or CFO is ever asked.
    nb = execute(EXPENSE, output_dir=str(tmp_path / "expenses"), parallel_limit=100_000,
                 manager_on_timeout="reject", auto_limit=1_000.01)
    text = printed(nb)
    assert "decisions ok" in text and "approval tasks ok" in text
    table = decisions(tmp_path)
    by_amount = table.set_index("amount")
    assert by_amount.loc[1_000.00, "band"] == "auto" and by_amount.loc[1_000.00, "decision"] == "approved"
    assert by_amount.loc[50_000.00, "band"] == "parallel"
    assert by_amount.loc[50_000.00, "approvals"] == "manager ✗ + finance ✓"
    needs_approval = table[table["amount"] >= 1_000.01]
    assert len(needs_approval) == 8 and (needs_approval["decision"] == "rejected").all()
    assert (needs_approval["decided_by"] == "manager").all()
    sequential = table[table["band"] == "sequential"]
    assert len(sequential) >= 1 and (sequential["approvals"] == "manager ✗").all()
    assert not table["approvals"].str.contains("director|cfo").any()
    # approvals asked: one per manager-band claim, two per parallel claim, only the manager's in
    # the sequential chain; every other approval task in the graph was skipped
    bands = table["band"].value_counts()
    asked = bands.get("manager", 0) + 2 * bands.get("parallel", 0) + bands.get("sequential", 0)
    assert f"approval tasks: 72 in the graph, {asked} asked, {72 - asked} skipped" in text


# -- ETL ----------------------------------------------------------------------------------

def table_rows(db: Path, table: str = "records") -> pd.DataFrame:
    with sqlite3.connect(db) as con:
        return pd.read_sql_query(f"SELECT * FROM {table} ORDER BY id", con)


def test_etl_validates_batches_loads_idempotently(execute, tmp_path: Path) -> None:
    db = tmp_path / "db" / "warehouse.db"
    nb = execute(ETL, db_path=str(db))
    text = printed(nb)
    for marker in ("rules ok", "ETL ok", "edge ok",
                   "idempotent: same 200 rows before and after the second run",
                   "240 extracted, 200 valid, 40 rejected (16.7%); 200 rows loaded into records via the "
                   "batched path in 4 load(s) (200 inserted, 0 updated)",
                   "(0 inserted, 200 updated)",
                   "99 rows loaded into edge_99 via the direct path",
                   "100 rows loaded into edge_100 via the batched path in 2 load(s)"):
        assert marker in text, marker
    peak = re.search(r"most loads running at once: (\d+) \(engine timestamps\), (\d+)", text)
    assert peak and 1 <= int(peak[1]) <= 2 and 1 <= int(peak[2]) <= 2

    # The database is where the parameter pointed, with exactly the valid records, once each.
    rows = table_rows(db)
    assert len(rows) == 200 and rows["id"].is_unique
    assert rows["country"].str.fullmatch("[A-Z]{2}").all()
    assert rows["day"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert rows["user_id"].str.fullmatch(r"u\d{5}").all()
    assert len(table_rows(db.parent / "edge.db", "edge_99")) == 99
    assert len(table_rows(db.parent / "edge.db", "edge_100")) == 100


def test_notebooks_run_again_with_the_same_store_and_files(execute, tmp_path: Path) -> None:
    # The second execution finds the first one's cached results in NBFLOW_HOME: the tasks with
    # side effects (creating the table, loading, writing decisions.csv) must still really run.
    db = tmp_path / "warehouse.db"
    for _ in range(2):
        (tmp_path / "expenses" / "decisions.csv").unlink(missing_ok=True)
        text = printed(execute(EXPENSE, output_dir=str(tmp_path / "expenses")))
        assert "approval tasks ok" in text and len(decisions(tmp_path)) == 12
        text = printed(execute(ETL, db_path=str(db)))
        assert "200 inserted, 0 updated" in text and "edge ok" in text
        assert len(table_rows(db)) == 200


def test_etl_threshold_parameter_switches_to_the_direct_load(execute, tmp_path: Path) -> None:
    db = tmp_path / "warehouse.db"
    nb = execute(ETL, db_path=str(db), batch_threshold=201, max_parallel_loads=1)
    text = printed(nb)
    assert "ETL ok" in text and "edge ok" in text
    assert "200 rows loaded into records via the direct path in 1 load(s)" in text
    assert "most loads running at once: 1 (engine timestamps), 1" in text
    assert "200 rows loaded into edge_200 via the direct path" in text
    assert "201 rows loaded into edge_201 via the batched path in 5 load(s)" in text
    assert len(table_rows(db)) == 200
