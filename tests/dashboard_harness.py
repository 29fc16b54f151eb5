"""What the dashboard tests share: a real Jupyter server (or JupyterLab) on 127.0.0.1 with a
token, reading a given run store, and workflow scripts run in their own processes."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LABEXTENSION = Path(__file__).resolve().parents[1] / "nbflow" / "labextension"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    base: str
    token: str
    home: Path
    log: Path

    def url(self, path: str, token: bool = True) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/nbflow/api/{path}" + (f"{sep}token={self.token}" if token else "")


def wait_for(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerExited(f"the Jupyter server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the Jupyter server did not answer at {url}:\n{log.read_text()[-3000:]}")


class ServerExited(RuntimeError):
    """The server process ended before it answered."""


PORT_TAKEN = ("is already in use", "is not available")  # jupyter_server's words, port_retries=0


def quiet_lab(config_dir: Path) -> None:
    """User settings for a test JupyterLab whose config directory is ``config_dir``: no
    news prompt and no update check.  The prompt is a toast over the page's corner; a test
    that dismisses it can find it leaving the page as it clicks (the click then waits on a
    detached button until it times out), and it covers screenshots."""
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}\n')


def serve(cmd: list[str], *, env: dict[str, str], cwd: Path, log: Path, token: str,
          attempts: int = 5) -> tuple[subprocess.Popen[bytes], str]:
    """Start a Jupyter server (``cmd`` without a port) on a free port; its process and base URL.

    Between :func:`free_port` closing its socket and the server binding the port, another
    process on the machine (other test runs) may take it.  By default the server then moves
    to another port, one the test does not know (and may find someone else's server on); with
    ``port_retries=0`` it exits instead, and another free port is tried."""
    for attempt in range(attempts):
        port = free_port()
        with open(log, "wb") as out:
            proc = subprocess.Popen([*cmd, f"--port={port}", "--ServerApp.port_retries=0"], stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd=cwd)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(f"{base}/api/status?token={token}", proc, log)
            return proc, base
        except BaseException as e:
            stop(proc)
            taken = isinstance(e, ServerExited) and any(w in log.read_text() for w in PORT_TAKEN)
            if not taken or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def jupyter(tmp: Path, home: Path, *, lab: bool = False) -> Iterator[Server]:
    """A ``jupyter server`` (or ``jupyter lab``) subprocess whose dashboard reads ``home``.

    The nbflow server extension is not enabled here: the install enables it (the
    jupyter_server_config.d file), and that is part of what the tests check."""
    root = tmp / "root"
    root.mkdir(exist_ok=True)
    token = uuid.uuid4().hex
    log = tmp / ("lab.log" if lab else "server.log")
    # JupyterLab takes the first "nbflow" lab extension on its data path, JUPYTER_PATH first:
    # point it at this checkout's built assets, not whichever checkout the venv links to
    data = tmp / "jupyter-data" / "labextensions"
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "nbflow").is_symlink():
        (data / "nbflow").symlink_to(LABEXTENSION, target_is_directory=True)
    quiet_lab(tmp / "config")
    env = dict(os.environ, NBFLOW_HOME=str(home), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "rt"),
               JUPYTER_PATH=os.pathsep.join(filter(None, [str(data.parent), os.environ.get("JUPYTER_PATH")])))
    cmd = [sys.executable, "-m", "jupyterlab" if lab else "jupyter_server", "--no-browser",
           "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.open_browser=False"]
    if lab:
        cmd += ["--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    proc, base = serve(cmd, env=env, cwd=root, log=log, token=token)
    try:
        yield Server(base, token, home, log)
    finally:
        stop(proc)


def script(tmp: Path, home: Path, code: str, name: str = "flow.py") -> subprocess.Popen[bytes]:
    """Start ``code`` (a workflow script) in its own Python process writing to ``home``."""
    path = tmp / name
    path.write_text(textwrap.dedent(code))
    env = dict(os.environ, NBFLOW_HOME=str(home))
    return subprocess.Popen([sys.executable, str(path)], env=env, cwd=tmp, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


# A run that takes about a minute unless cancelled: 300 steps of 0.2 s on two workers.
LONG_RUN = """
import time
import nbflow as nf

@nf.task
def step(i):
    time.sleep(0.2)
    return i

@nf.task
def total(xs):
    return sum(xs)

with nf.Workflow("long") as wf:
    out = total(step.map(list(range(300))))
run = wf.run(workers=2, raise_on_error=False, cache=False)
print("STATUS", run.status, run.id, flush=True)
"""
