"""Every ``nbflow`` sub-command's ``--help`` says what the command does, not only its options,
and where the store is when ``--home`` is not given (as :func:`nbflow.store.store_home` finds it)."""

from __future__ import annotations

import pytest

from nbflow.cli import main

COMMANDS = {
    "runs": "List the workflow runs recorded in the store",
    "gc": "Remove old runs and the stored results only they use",
    "doctor": "Check the store",
    "run": "Run a notebook headless in its own kernel",
    "sweep": "Run a notebook once per combination of parameter values",
    "outputs": "Print the values a batch run or workflow run recorded with nf.output",
    "report": "Write a self-contained HTML report",
    "show": "Print a workflow run's (or batch run's) summary",
    "explain": "Say why a task of a run ran or was served from the cache",
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_of_every_command_says_what_it_does(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"usage: nbflow {command}" in text
    assert COMMANDS[command] in text
    assert "the nearest .nbflow/ here or above, else a new one at the project root" in text


def test_the_command_list_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(f"    {c} " in out for c in COMMANDS)


def test_long_parameters_are_shortened_in_runs_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    """A parameter resolved from another notebook's outputs (a whole DataFrame's text) would
    fill the terminal: ``nbflow runs`` and ``nbflow show`` shorten it."""
    import json
    import sqlite3

    import nbflow as nf
    from nbflow.store import get_store

    @nf.task
    def one() -> int:
        return 1

    with nf.Workflow("params") as wf:
        one()
    run = wf.run()
    frame = "\n".join(f"{i:4d} {i * 0.5:10.4f}" for i in range(300))
    store = get_store()
    store.journal.flush()
    with sqlite3.connect(store.journal.path) as db:
        db.execute("INSERT INTO run_params(run_id, name, value) VALUES(?, ?, ?)",
                   (run.id, "prep", json.dumps({"train": frame, "rows": 300})))
        db.execute("INSERT INTO run_params(run_id, name, value) VALUES(?, ?, ?)",
                   (run.id, "alpha", json.dumps(0.5)))
    assert main(["runs"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(run.id))
    assert "alpha=0.5 prep={'rows': 300, 'train': '   0     0.0000" in line and "..." in line
    assert len(line) < 250
    assert main(["show", run.id]) == 0
    printed = capsys.readouterr().out.splitlines()
    shown = next(ln for ln in printed if ln.startswith("parameters:"))
    row = next(ln for ln in printed if ln.lstrip().startswith("one-0"))
    assert not row.rstrip().endswith(("None", "NaN")), row  # a task without an error shows none
    assert shown.startswith("parameters: alpha=0.5 prep=") and "..." in shown and len(shown) < 150
