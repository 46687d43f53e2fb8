"""The browser half: the viewer's pages, their JSON, and whole-log downloads.

Everything is served by ``relaycast api`` from files in this package (``relaycast/api/static``): no
front-end server, no build step, nothing loaded from elsewhere, so it works offline.

Pages (sign-in flow in :mod:`api.auth`):

* ``/`` → ``/ui/``: the runs list and the broadcaster panel;
* ``/ui/runs/{run_id}``: the run view.

JSON and downloads (bearer token or session cookie):

* ``GET /runs?limit=&status=&workflow=``: recent runs, newest first, with their line counts;
* ``GET /workflows``: the workflows registered (``RELAYCAST_WORKFLOWS``), with parameters;
* ``GET /runs/{run_id}``: one run's status;
* ``GET /runs/{run_id}/logs.ndjson`` and ``.txt``: every stored line, streamed page by page.

Public:

* ``GET /ui/config``: which transport the browser should use and how (never a secret);
* ``GET /ui/static/...``: the JavaScript client (``relaycast.js``), the pages' scripts and
  styles, and the pinned pusher-js (``vendor/pusher.min.js``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from broadcasters.factory import is_live
from broadcasters.manager import traffic_carrier
from broadcasters.state import SharedState
from broadcasters.status import HealthReport
from broadcasters.wire import Channels
from config import Settings
from relaycast.api.auth import PAGE_HEADERS, Auth
from relaycast.api.schemas import (
    INVALID_RUN_ID,
    UNAUTHORIZED,
    BrowserConfig,
    Responses,
    RunIdPath,
    RunInfo,
    RunList,
    SafeJSONResponse,
    WorkflowList,
    problems,
)
from workflows.models import LogLine, Run, RunStatus
from workflows.registry import describe, known
from workflows.store import LogStore, store_for

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Content types of the files served from ``/ui/static`` (anything else is not served).
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
#: Lines per database query while streaming a download.
DOWNLOAD_PAGE = 5000


#: Broadcasters a browser can subscribe to, and so transports the client knows.
BROWSER_TRANSPORTS = ("pusher", "socketio")


def browser_config(settings: Settings, state: SharedState) -> dict[str, Any]:
    """What ``GET /ui/config`` answers: the transport a browser should use, and how.

    ``active_broadcaster`` is the broadcaster carrying traffic, as the manager sees it
    (:func:`~broadcasters.manager.traffic_carrier`): the one the workers last reported or,
    when that one is now disabled or paused, the one they move to on their next send. The
    transport is that broadcaster when a browser can subscribe to it (``pusher``,
    ``socketio``); otherwise ``polling``: traffic goes where a browser cannot subscribe
    (``log``, or ``ably`` for now), so the client polls the history endpoint.
    """
    order = settings.broadcaster_order  # never empty; every one configured (Settings checks)
    flags = state.flags(order)
    reported = state.active()
    before = traffic_carrier(order, {}, reported, is_live)  # flags aside: as last reported
    active = traffic_carrier(order, flags, reported, is_live)
    browser_ready = [name for name in order if name in BROWSER_TRANSPORTS]
    chosen = active if active in browser_ready and active not in flags else None
    if chosen is not None:
        reason = None
    elif not browser_ready:
        reason = "no broadcaster a browser can subscribe to is configured"
    elif before in flags:
        reason = f"{before} {flags[before].kind}: {flags[before].reason}"
    elif active not in BROWSER_TRANSPORTS:
        reason = f"the active broadcaster is {active}, which a browser cannot subscribe to"
    else:
        reason = f"the active broadcaster is {active}, which this server has no settings for"
    poll_ms = settings.browser_poll_interval_ms
    config: dict[str, Any] = {
        "transport": chosen or "polling",
        "reason": reason,
        "active_broadcaster": active,
        "channel_prefix": settings.channel_prefix,
        "poll_interval_ms": poll_ms,
        # The client re-reads this config this often: after a quota stop or an outage the
        # provider-changed announcement cannot reach a Pusher page (it goes to log).
        "config_refresh_ms": max(2000, 3 * poll_ms),
        "pusher": None,
        "socketio": None,
    }
    if "pusher" in browser_ready:
        host, port, tls = settings.browser_ws
        config["pusher"] = {"key": settings.pusher_key, "cluster": settings.pusher_cluster_or_default,
                            "wsHost": host, "wsPort": port, "forceTLS": tls}
    if "socketio" in browser_ready:
        # No URL: the page's own host on this port (relaycast socketio beside relaycast api).
        config["socketio"] = {"url": settings.browser_socketio_url, "port": settings.socketio_port}
    return config


def _run_json(run_id: str, run: Run | None, counts: tuple[int, int] | None,
              channels: Channels) -> dict[str, Any]:
    """A run as the API answers it; ``run`` None: lines without a run record (stored by code
    outside a workflow task)."""
    lines, last_seq = counts or (0, 0)
    out: dict[str, Any] = {
        "run_id": run_id, "workflow": None, "status": None, "params": {}, "started_at": None,
        "finished_at": None, "duration_s": None, "error": None, "lines": lines,
        "last_seq": last_seq, "channel": channels.logs(run_id)}
    if run is not None:
        finished = run.finished_at
        out.update(workflow=run.workflow, status=run.status, params=run.params,
                   started_at=run.started_at, finished_at=finished, error=run.error,
                   duration_s=round((finished - run.started_at) / 1000, 3) if finished else None)
    return out


def _text_line(line: LogLine) -> str:
    return line.text("%Y-%m-%dT%H:%M:%S", "Z") + "\n"


def _ndjson_line(line: LogLine) -> str:
    return json.dumps(line.event(), ensure_ascii=False) + "\n"


def build_router(settings: Settings, state: SharedState, auth: Auth) -> APIRouter:
    router = APIRouter()
    guard = auth.guard()
    locked = UNAUTHORIZED if auth.enabled else {}
    channels = Channels(settings.channel_prefix)

    def store() -> LogStore:
        return store_for(settings.database_url_or_default)

    # Pages -------------------------------------------------------------------------------------

    def page(request: Request, name: str) -> Response:
        gate = auth.page_gate(request)
        if gate is not None:
            return gate
        return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8",
                            headers=dict(PAGE_HEADERS))

    @router.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @router.get("/ui", include_in_schema=False)
    def ui_no_slash(request: Request) -> RedirectResponse:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"/ui/{query}", status_code=307)

    @router.get("/ui/", include_in_schema=False)
    def runs_page(request: Request) -> Response:
        return page(request, "index.html")

    @router.get("/ui/runs/{run_id}", include_in_schema=False)
    def run_page(request: Request, run_id: str) -> Response:
        return page(request, "run.html")

    # Public: transport config and static files ---------------------------------------------

    @router.get("/ui/config", response_model=BrowserConfig, response_class=SafeJSONResponse)
    def ui_config(response: Response) -> dict[str, Any]:
        """Which transport the browser should use, and how (public: never a secret)."""
        response.headers["Cache-Control"] = "no-store"
        return browser_config(settings, state)

    @router.get("/ui/static/{path:path}", include_in_schema=False)
    def static(path: str, request: Request) -> Response:
        file = (STATIC_DIR / path).resolve()
        media_type = STATIC_TYPES.get(file.suffix)
        if media_type is None or not file.is_relative_to(STATIC_DIR) or not file.is_file():
            raise HTTPException(status_code=404, detail="not found")
        body = file.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media_type, headers=headers)

    # Runs --------------------------------------------------------------------------------------

    @router.get("/runs", dependencies=guard, response_model=RunList,
                response_class=SafeJSONResponse, responses=locked)
    def list_runs(limit: Annotated[int, Query(ge=1, le=500)] = 50,
                  status: RunStatus | None = None,
                  workflow: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
                  ) -> dict[str, Any]:
        """Recent runs, newest first, with their line counts."""
        runs = store().recent_runs(limit, status, workflow)
        counts = store().line_counts(r.run_id for r in runs)
        return {"runs": [_run_json(r.run_id, r, counts.get(r.run_id), channels) for r in runs]}

    @router.get("/workflows", dependencies=guard, response_model=WorkflowList,
                response_class=SafeJSONResponse, responses=locked)
    def list_workflows() -> dict[str, Any]:
        """The workflows this API knows (``RELAYCAST_WORKFLOWS``), as ``relaycast workflows``."""
        return {"workflows": [describe(name) for name in known()]}

    @router.get("/runs/{run_id}", dependencies=guard, response_model=RunInfo,
                response_class=SafeJSONResponse, responses={
                    **locked, **INVALID_RUN_ID,
                    **problems({404: "No run record and no stored line with this id."})})
    def one_run(run_id: RunIdPath) -> dict[str, Any]:
        """One run's record and line count."""
        run_id = channels.validate_run_id(run_id)  # InvalidRunId: 400 (relaycast.api.app)
        run = store().run(run_id)
        counts = store().line_counts([run_id]).get(run_id)
        if run is None and counts is None:
            raise HTTPException(status_code=404, detail=f"no run {run_id}")
        return _run_json(run_id, run, counts, channels)

    def download(run_id: str, render: Any, media_type: str, suffix: str) -> StreamingResponse:
        run_id = channels.validate_run_id(run_id)  # InvalidRunId: 400 (relaycast.api.app)
        log_store = store()

        def body() -> Iterator[bytes]:
            after = 0
            while True:
                lines = log_store.lines(run_id, after, DOWNLOAD_PAGE)
                if not lines:
                    return
                yield "".join(render(line) for line in lines).encode("utf-8")
                after = lines[-1].seq

        return StreamingResponse(body(), media_type=media_type, headers={
            "Content-Disposition": f'attachment; filename="{run_id}{suffix}"',
            "Cache-Control": "no-store"})

    @router.get("/runs/{run_id}/logs.ndjson", dependencies=guard, response_class=StreamingResponse,
                responses={**locked, **INVALID_RUN_ID, **download_answer(
                    "application/x-ndjson", "One line per stored line: the JSON object "
                    "`GET /runs/{run_id}/logs` has in `events`.")})
    def download_ndjson(run_id: RunIdPath) -> StreamingResponse:
        """Every stored line of the run as NDJSON, streamed (empty for an unknown run)."""
        return download(run_id, _ndjson_line, "application/x-ndjson; charset=utf-8", ".ndjson")

    @router.get("/runs/{run_id}/logs.txt", dependencies=guard, response_class=StreamingResponse,
                responses={**locked, **INVALID_RUN_ID, **download_answer(
                    "text/plain", "One line per stored line, as `relaycast logs` prints it.")})
    def download_txt(run_id: RunIdPath) -> StreamingResponse:
        """Every stored line of the run as text, streamed (empty for an unknown run)."""
        return download(run_id, _text_line, "text/plain; charset=utf-8", ".txt")

    return router


def download_answer(media_type: str, description: str) -> Responses:
    """The 200 of a download route: a file of ``media_type`` (UTF-8)."""
    return {200: {"description": description + " Sent as an attachment.",
                  "content": {media_type: {"schema": {"type": "string"}}},
                  "headers": {"Content-Disposition": {
                      "description": '`attachment; filename="<run_id>.<suffix>"`',
                      "schema": {"type": "string"}}}}}


def sent_per_minute(report: HealthReport, state: SharedState) -> dict[str, Any]:
    """Messages each broadcaster sent per minute over the last hour, for the panel's chart
    (from the live report, which read them with its counters)."""
    return {
        "sent_per_minute": {row.name: row.sent_per_minute for row in report.broadcasters},
        # The end of the last bucket (the current minute), epoch seconds.
        "sent_per_minute_until": (int(state.clock() // 60) + 1) * 60,
    }
