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
