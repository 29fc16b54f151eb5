"""A pytest plugin for the tests' nbval runs (``-p nbval_iopub``, this folder on the path):
nbval waits a fixed 5 s (``IPyNbCell.output_timeout``, no option sets it) for each IOPub
message of a cell once the kernel has replied, then stops the kernel and fails the cell
("Timeout of 5 seconds exceeded waiting for output").  A busy machine can delay a cell's
last messages (its "idle") that long after a reply; this raises the wait to
``nbharness.IOPUB_TIMEOUT``, which ends as soon as the message comes."""

from __future__ import annotations

from typing import Any

from nbharness import IOPUB_TIMEOUT


def pytest_collection_modifyitems(items: list[Any]) -> None:
    from nbval.plugin import IPyNbCell

    for item in items:
        if isinstance(item, IPyNbCell):
            item.output_timeout = IOPUB_TIMEOUT  # set per cell in IPyNbCell.__init__
