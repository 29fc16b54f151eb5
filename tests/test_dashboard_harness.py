"""The test harness's Jupyter server starts on the port the test was told, or on another free
one: never on a port the test does not know.

``free_port()`` closes its socket before the server binds the port, so another process on a
shared machine may take it in between.  Jupyter's default is then to move to a nearby port
silently; the tests would wait on the old port (or reach someone else's server there).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dashboard_harness as dh

requests = pytest.importorskip("requests")
pytest.importorskip("jupyter_server")


def test_a_port_taken_before_the_server_binds_it_is_given_up_for_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    real = dh.free_port
    offered: list[int] = []

    def first_the_taken_one() -> int:
        offered.append(busy if not offered else real())
        return offered[-1]

    monkeypatch.setattr(dh, "free_port", first_the_taken_one)
    try:
        with dh.jupyter(tmp_path, tmp_path / "store") as server:
            assert len(offered) == 2 and server.base == f"http://127.0.0.1:{offered[1]}"
            assert requests.get(server.url("runs"), timeout=60).status_code == 200
    finally:
        taken.close()
