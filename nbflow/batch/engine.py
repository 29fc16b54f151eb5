"""A papermill engine that nbflow can stop cleanly and follow cell by cell.

papermill executes a notebook through an *engine*; this one is papermill's own nbclient
engine with three additions, all in :class:`Control`:

* it knows the kernel's process, so a stop request (Ctrl-C, SIGTERM) can *interrupt* the
  kernel first — the running ``wf.run()`` then cancels its workflow run, which is recorded
  as cancelled — before papermill shuts the kernel down;
* it checks for a stop request before each cell, so a stop between cells runs no more cells;
* it reports each cell's start and end (the terminal progress of ``nbflow run``) and the
  notebook's streamed output lines;
* it starts the kernel with the environment and working directory the batch run gives it,
  never touching this process's own (so batch runs can run side by side in threads);
* it gives the kernel's own process output (its file descriptors 1 and 2: ipykernel's log
  lines, echoes of C-level writes, tracebacks of its own shutdown) to a log file instead of
  the batch's terminal: ``nbflow run`` prints its own lines only, its standard output stays
  the batch id a script reads, and a kernel that dies leaves its last words in that file;
* it asks the kernel manager to encrypt the kernel's sockets (CurveZMQ keys made for this
  kernel) when the kernel says it can: the traffic is then not readable by other local
  users, and ipykernel (7.4 and later) has no reason to warn "Kernel is running over TCP
  without encryption" on the batch's terminal, which it does for every unencrypted kernel;
* it waits up to :data:`IOPUB_TIMEOUT` seconds, not nbclient's 4, for a cell's last
  messages (its outputs, then the kernel's "idle") once the kernel has replied that the cell
  ran: papermill fails the cell when they are later ("Timeout waiting for IOPub output"),
  which a busy machine made happen to cells that had run fine.  They normally arrive at
  once, so the wait costs nothing; and a cell's own ``execution_timeout`` is not this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbclient.util import run_sync
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.utils import merge_kwargs, remove_args

ENGINE_NAME = "nbflow"
IOPUB_TIMEOUT = 60  # seconds a cell's last messages may lag its reply (see the module)


class Stopped(Exception):
    """The batch run was asked to stop (Ctrl-C or SIGTERM) before the next cell."""


class Control:
    """Shared between the caller and the engine while one notebook runs."""

    def __init__(
        self,
        on_cell: Callable[[int, int, Any, str], None] | None = None,
        on_line: Callable[[str, str], None] | None = None,
    ) -> None:
        self.on_cell = on_cell  # (index, n_cells, cell, "start" | "end")
        self.on_line = on_line  # (stream name, text)
        self.stop_reason: str | None = None
        self.current_cell: int | None = None  # index of the cell running now (or last run)
        self.kernel_pid: int | None = None
        self.env: dict[str, str] | None = None  # the kernel's environment (None: this process's)
        self.cwd: str | None = None  # the kernel's working directory
        self.kernel_log: Path | None = None  # the kernel process's stdout and stderr (None: ours)
        self._lock = threading.Lock()

    def request_stop(self, reason: str) -> bool:
        """Ask the run to stop; interrupts the kernel.  True the first time."""
        with self._lock:
            first = self.stop_reason is None
            if first:
                self.stop_reason = reason
        self.interrupt_kernel()
        return first

    def interrupt_kernel(self) -> None:
        # ipykernel turns SIGINT into KeyboardInterrupt in the running cell, which makes a
        # blocking wf.run() cancel its run and wait until nothing it started is running.
        pid = self.kernel_pid
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGINT)


class _Client(PapermillNotebookClient):
    def __init__(self, nb_man: Any, nbflow_control: Control | None = None, **kw: Any) -> None:
        super().__init__(nb_man, **kw)
        self.nbflow_control = nbflow_control or Control()

    async def async_start_new_kernel(self, **kwargs: Any) -> None:
        ctl = self.nbflow_control
        if ctl.env is not None:
            kwargs["env"] = ctl.env
        if ctl.cwd is not None:
            kwargs["cwd"] = ctl.cwd
        _encrypt_if_supported(self.km)
        log = _open_log(ctl.kernel_log) if ctl.kernel_log is not None else None
        if log is not None:
            kwargs["stdout"] = kwargs["stderr"] = log
        try:
            await super().async_start_new_kernel(**kwargs)
        finally:
            if log is not None:
                os.close(log)  # (the kernel has its own copy of the descriptor)
        proc = getattr(getattr(self.km, "provisioner", None), "process", None)
        self.nbflow_control.kernel_pid = getattr(proc, "pid", None)

    # nbclient binds its sync wrapper to its own coroutine: bind ours.
    start_new_kernel = run_sync(async_start_new_kernel)

    def papermill_execute_cells(self) -> None:
        ctl = self.nbflow_control
        n = len(self.nb.cells)
        from nbclient.exceptions import CellExecutionError

        for index, cell in enumerate(self.nb.cells):
            if ctl.stop_reason is not None:
                raise Stopped(ctl.stop_reason)
            ctl.current_cell = index
            if ctl.on_cell is not None:
                ctl.on_cell(index, n, cell, "start")
            try:
                self.nb_man.cell_start(cell, index)
                self.execute_cell(cell, index)
            except CellExecutionError as ex:
                self.nb_man.cell_exception(self.nb.cells[index], cell_index=index, exception=ex)
                break
            finally:
                self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)
                if ctl.on_cell is not None:
                    ctl.on_cell(index, n, self.nb.cells[index], "end")

    def log_output_message(self, output: Any) -> None:
        super().log_output_message(output)
        ctl = self.nbflow_control
        if ctl.on_line is not None and output.output_type == "stream":
            ctl.on_line(output.name, "".join(output.text))

    def process_message(self, *args: Any, **kwargs: Any) -> Any:
        out = super().process_message(*args, **kwargs)
        if (
            out is not None
            and self.nbflow_control.on_line is not None
            and not (self.log_output or self.stderr_file or self.stdout_file)
        ):
            self.log_output_message(out)
        return out


def _open_log(path: Path) -> int:
    """A descriptor appending to ``path`` (made private: a kernel's output may show data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def _encrypt_if_supported(km: Any) -> None:
    """Have ``km`` give the kernel CurveZMQ keys when its kernelspec declares it supports
    them ("auto"; a kernel that does not keeps plain TCP, as before).  Older
    jupyter_client versions have no such setting, and a pyzmq built without libsodium
    cannot encrypt: both are left as they are."""
    if km is None or not km.has_trait("transport_encryption"):
        return
    import zmq

    if zmq.has("curve"):
        km.transport_encryption = "auto"


class Engine(NBClientEngine):
    """papermill's nbclient engine, running :class:`_Client`."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: int = 60,
        execution_timeout: Any = None,
        **kwargs: Any,
    ) -> Any:
        kwargs = remove_args(["input_path"], **kwargs)
        safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
        final = merge_kwargs(
            safe_kwargs,
            timeout=execution_timeout or kwargs.get("timeout"),
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
        )
        from papermill.log import logger

        final["log"] = logger
        final.setdefault("iopub_timeout", IOPUB_TIMEOUT)
        return _Client(nb_man, **final).execute()


papermill_engines.register(ENGINE_NAME, Engine)
