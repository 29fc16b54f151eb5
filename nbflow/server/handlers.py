"""The REST handlers under ``/nbflow/api/`` (tornado, inside the Jupyter server).

Every handler is a Jupyter ``APIHandler`` behind ``@web.authenticated`` and ``@authorized``
(resource ``nbflow``): requests need the server's token (or its login cookie, and then the
XSRF token on POST, which ``APIHandler`` checks as for every Jupyter API).  Run ids from the
URL are checked against the run-id format before anything is read (400 otherwise) and are
only used as SQL parameters.  SQLite work runs in a thread so the server's event loop
never waits on the disk.

=======================================  ===================================================
``GET  runs?status=&name=&since=&limit=&offset=``  a page of runs, newest first, ``total``
``GET  runs/{id}``                       the run, its tasks, graph edges, error tracebacks
``GET  runs/{id}/events?after=N&timeout=S``  events with seq > N; waits up to S s (max 25)
                                         while the run is live and nothing is new
``GET  runs/{id}/view``                  the notebook widget's progress line and graph SVG
``GET  runs/{id}/report``                the batch HTML report, when that module exists
``POST runs/{id}/cancel``                ask the run's process to cancel it (202)
=======================================  ===================================================
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from . import reader
from .cancel import request_cancel
from .ids import BadRunId, check_run_id
from .mirror import Mirrors

AUTH_RESOURCE = "nbflow"
MAX_WAIT = 25.0  # longest a long-poll is held open (below common proxy timeouts)
POLL_S = 0.2  # how often a held long-poll looks for new rows
STATUSES = ("running", "completed", "failed", "cancelled", "interrupted")


def store_home(root_dir: str | os.PathLike[str]) -> Path:
    """The store the dashboard reads: the one the notebooks under the server's root write to,
    found from the root as a run finds it from its folder (``$NBFLOW_HOME``, else the
    nearest ``.nbflow/`` there or above, else the project root's): a lab started in a
    project's subfolder shows the project's runs."""
    from ..store.store import store_home as find

    return find(root_dir)


class _Base(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def home(self) -> Path:
        return self.settings["nbflow_home"]

    async def blocking(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kw))

    def checked_id(self, raw: str) -> str:
        try:
            return check_run_id(raw)
        except BadRunId as e:
            raise web.HTTPError(400, str(e)) from None

    def int_arg(self, name: str, default: int, lo: int = 0) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise web.HTTPError(400, f"{name} must be a whole number, got {raw[:40]!r}") from None
        if value < lo:
            raise web.HTTPError(400, f"{name} must be at least {lo}, got {value}")
        return value

    def reply(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(obj, default=str))


def _since(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise web.HTTPError(400, f"since must be epoch seconds or an ISO 8601 time such as "
                                 f"2026-01-12T09:30:00Z, got {raw[:40]!r}") from None
    return (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()


class RunsHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        status = self.get_query_argument("status", None) or None
        if status is not None and status not in STATUSES:
            raise web.HTTPError(400, f"status must be one of {', '.join(STATUSES)}, got {status[:40]!r}")
        page = await self.blocking(
            reader.list_runs, self.home, status=status, name=self.get_query_argument("name", None) or None,
            since=_since(self.get_query_argument("since", None)), limit=self.int_arg("limit", 50, 1),
            offset=self.int_arg("offset", 0))
        self.reply(page)


class RunHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        run_id = self.checked_id(run_id)
        detail = await self.blocking(reader.run_detail, self.home, run_id)
        if detail is None:
            raise web.HTTPError(404, f"no run {run_id} in the store {self.home}")
        self.reply(detail)


class EventsHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        run_id = self.checked_id(run_id)
        after = self.int_arg("after", 0)
        limit = min(self.int_arg("limit", 5000, 1), 20_000)
        wait = min(float(self.int_arg("timeout", 10)), MAX_WAIT)
        deadline = time.monotonic() + wait
        while True:
            status = await self.blocking(reader.run_status, self.home, run_id)
            if status is None:
                raise web.HTTPError(404, f"no run {run_id} in the store {self.home}")
            events = await self.blocking(reader.events_after, self.home, run_id, after, limit)
            # a run that has ended has all its events: answer at once, even with none
            if events or status != reader.LIVE or time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_S)
        last = events[-1]["seq"] if events else after
        self.reply({"events": events, "last": last, "status": status, "live": status == reader.LIVE,
                    "more": len(events) == limit})


class ViewHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        run_id = self.checked_id(run_id)
        status = await self.blocking(reader.run_status, self.home, run_id)
        mirrors = self.settings["nbflow_mirrors"]
        view = None if status is None else await self.blocking(mirrors.view, run_id, status)
        if view is None:
            raise web.HTTPError(404, f"no run {run_id} in the store {self.home}")
        self.reply(view)


class ReportHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        run_id = self.checked_id(run_id)
        if await self.blocking(reader.run_status, self.home, run_id) is None:
            raise web.HTTPError(404, f"no run {run_id} in the store {self.home}")
        try:
            from nbflow.batch.report import render_html
        except ImportError:
            raise web.HTTPError(404, "no HTML report for this run: this nbflow has no report renderer "
                                     "(nbflow.batch.report, the module behind `nbflow report`)") from None
        from ..store.store import get_store

        store = get_store(self.home, warn=False)
        html = await self.blocking(render_html, run_id, store)
        # (APIHandler.finish sets JSON unless told otherwise)
        self.finish(html, set_content_type="text/html; charset=utf-8")


class CancelHandler(_Base):
    @web.authenticated
    @authorized
    async def post(self, run_id: str) -> None:
        run_id = self.checked_id(run_id)
        status = await self.blocking(reader.run_status, self.home, run_id)
        if status is None:
            raise web.HTTPError(404, f"no run {run_id} in the store {self.home}")
        if status != reader.LIVE:
            raise web.HTTPError(409, f"run {run_id} is {status}; only a running run can be cancelled")
        user = getattr(self.current_user, "username", None)
        await self.blocking(request_cancel, self.home, run_id, user)
        self.reply({"run_id": run_id, "requested": True}, status=202)


def setup_handlers(serverapp: Any) -> None:
    """Add the handlers to the server's web app (called when the extension loads)."""
    web_app = serverapp.web_app
    home = store_home(getattr(serverapp, "root_dir", os.getcwd()))
    web_app.settings["nbflow_home"] = home
    web_app.settings["nbflow_mirrors"] = Mirrors(home)
    base = url_path_join(web_app.settings["base_url"], "nbflow", "api")
    rid = r"(?P<run_id>[^/]+)"
    web_app.add_handlers(".*$", [
        (url_path_join(base, "runs") + "/?", RunsHandler),
        (url_path_join(base, "runs", rid) + "/?", RunHandler),
        (url_path_join(base, "runs", rid, "events") + "/?", EventsHandler),
        (url_path_join(base, "runs", rid, "view") + "/?", ViewHandler),
        (url_path_join(base, "runs", rid, "report") + "/?", ReportHandler),
        (url_path_join(base, "runs", rid, "cancel") + "/?", CancelHandler),
    ])
    serverapp.log.info("nbflow dashboard API at %s, reading the run store %s", base, home)
