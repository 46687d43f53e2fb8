"""HTTP endpoints for the admin UI and browsers.

* ``GET /admin/broadcaster-status``: the health report, always computed live (marked
  stale when Redis is configured and beat's latest report has expired;
  :func:`tasks.reporting.current_report`).
* ``GET /runs/{run_id}/logs?after_seq=N``: a run's stored lines, for page load and catch-up
  after a reconnect (pusher-js does not replay missed messages).
* ``GET /readyz``: 200 when the database, Redis and the broker answer, else 503 naming what
  does not (:mod:`api.readiness`); ``GET /healthz`` is liveness only. Neither needs a token.
* ``GET /metrics``: the cluster's figures in Prometheus' text format (:mod:`api.metrics`),
  with the token like the rest unless ``RELAYCAST_METRICS_PUBLIC=true``.
* ``POST /pusher/auth``: signs pusher-js private-channel subscriptions: relaycast's own
  channels (``{prefix}logs-*``, ``{prefix}admin-*``) for the admin token or session, and
  application channels (``{prefix}{name}``, :func:`workflows.app_events.broadcast`) for the
  admin too, or for whom ``RELAYCAST_CHANNEL_AUTHORIZER`` allows (:mod:`relaycast.api.auth`).

With ``RELAYCAST_ADMIN_TOKEN`` set, every endpoint needs ``Authorization: Bearer <token>``
or the viewer's session cookie (:mod:`api.auth`; the OpenAPI schema and its docs pages
too); without it, ``relaycast api`` listens on loopback only. Answers are JSON that is
always valid UTF-8: a lone surrogate stored by an older version becomes U+FFFD rather than
a 500. The viewer's pages and their JSON are in :mod:`api.ui`.

Every request body is capped at :data:`MAX_BODY_BYTES` (1 MiB) before the route reads it
(:class:`BodyLimit`): a declared ``Content-Length`` over it answers 413 at once, a chunked
body is read incrementally and cut with 413 as soon as it passes it. No endpoint takes more
than a few kilobytes (``/pusher/auth`` a form, ``/pusher/webhook`` Pusher's few hundred bytes).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import generate_latest

from broadcasters.factory import build_state
from broadcasters.wire import Channels, InvalidRunId, channel_name_problem, shown_channel
from config import Settings
from relaycast._layout import ensure_ours
from relaycast.api import webhooks
from relaycast.api.auth import Auth, ask_authorizer, load_channel_authorizer
from relaycast.api.metrics import build_registry
from relaycast.api.readiness import readiness
from relaycast.api.schemas import (
    BODY_LIMIT,
    INVALID_RUN_ID,
    PUSHER_AUTH_BODY,
    UNAUTHORIZED,
    BroadcasterStatus,
    PusherAuth,
    RunIdPath,
    RunLogs,
    SafeJSONResponse,
    problems,
)
from relaycast.api.ui import build_router, sent_per_minute
from tasks.reporting import current_report
from workflows.registry import import_workflows
from workflows.store import store_for

MAX_PAGE = 10_000
#: The largest seq SQL holds (a 32-bit integer column).
MAX_SEQ = 2**31 - 1
#: The largest request body any endpoint reads (413 above it, decided before reading it).
MAX_BODY_BYTES = 1024 * 1024
#: Prometheus' text format 0.0.4, which every scraper reads (the names are plain ASCII).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: no request body over ``limit`` bytes reaches the app, or memory.

    A declared ``Content-Length`` over the limit answers 413 before a byte of the body is
    read (the server enforces a declared length, so one within the limit passes as it is).
    A body without one (``Transfer-Encoding: chunked``) is read here chunk by chunk with a
    running total: 413 as soon as it passes the limit, else the app gets it whole. The rest
    of a refused body is never read; the connection is closed after the answer.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.limit
            except ValueError:
                await _answer(send, 400, "invalid Content-Length")
                return
            if too_large:
                await _answer(send, 413, f"request body over {self.limit} bytes")
                return
            await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                await _answer(send, 413, f"request body over {self.limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: list[Message] = [{"type": "http.request", "body": b"".join(chunks),
                                 "more_body": False}]

        async def replay() -> Message:
            return whole.pop() if whole else await receive()

        await self.app(scope, replay, send)


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode("ascii")),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings) -> FastAPI:
    """The API for ``settings``; the user's workflow modules (``RELAYCAST_WORKFLOWS``) are
    imported first (:class:`ConfigError` naming one that fails)."""
    ensure_ours()
    import_workflows(settings.workflows)
    # Every route can be refused by the body cap (BodyLimit) before it runs: 400 and 413.
    app = FastAPI(title="relaycast", version="0.1.0", docs_url=None, redoc_url=None,
                  openapi_url=None, default_response_class=SafeJSONResponse,
                  responses=BODY_LIMIT)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    state = build_state(settings)
    channels = Channels(settings.channel_prefix)
    auth = Auth.for_settings(settings)
    guard = auth.guard()
    locked = UNAUTHORIZED if auth.enabled else {}
    authorizer = load_channel_authorizer(settings)

    @app.exception_handler(InvalidRunId)
    async def invalid_run_id(_request: Request, exc: Exception) -> JSONResponse:
        """Every route taking a run id answers a malformed one with 400 and the reason."""
        return SafeJSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, bool]:
        """Liveness for process supervisors (no token: it says nothing but "up")."""
        return {"ok": True}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Readiness: the database, Redis and the broker answer (503 naming what does not)."""
        ready, body = await readiness(settings)
        return SafeJSONResponse(body, status_code=200 if ready else 503)

    registry = build_registry(settings, state)

    @app.get("/metrics", dependencies=[] if settings.metrics_public else guard,
             include_in_schema=False)
    def metrics() -> Response:
        """The cluster's figures for Prometheus (token unless RELAYCAST_METRICS_PUBLIC)."""
        return Response(generate_latest(registry), media_type=METRICS_CONTENT_TYPE)

    @app.get("/openapi.json", dependencies=guard, include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", dependencies=guard, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="relaycast API")

    @app.get("/admin/broadcaster-status", dependencies=guard, response_model=BroadcasterStatus,
             response_class=SafeJSONResponse, responses=locked)
    def broadcaster_status() -> dict[str, Any]:
        """The health report, computed live (``stale`` when beat's latest report has expired)."""
        report = current_report(settings, state)
        return {**report.model_dump(mode="json"), **sent_per_minute(report, state)}

    @app.get("/runs/{run_id}/logs", dependencies=guard, response_model=RunLogs,
             response_class=SafeJSONResponse, responses={**locked, **INVALID_RUN_ID})
    def run_logs(run_id: RunIdPath,
                 after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
                 limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE) -> dict[str, Any]:
        """A run's stored lines after ``after_seq``, in seq order: page load, and catch-up
        after a reconnect (pusher-js does not replay what it missed)."""
        channels.validate_run_id(run_id)
        lines = store_for(settings.database_url_or_default).lines(run_id, after_seq, limit)
        return {
            "run_id": run_id,
            "channel": channels.logs(run_id),
            "events": [line.event() for line in lines],
            "next_after_seq": lines[-1].seq if lines else after_seq,
        }

    pusher_auth_security: dict[str, Any] = {}
    if auth.enabled and authorizer is not None:
        # No credentials at all is also a way in: RELAYCAST_CHANNEL_AUTHORIZER decides for
        # application channels (from the application's own session).
        pusher_auth_security = {"security": [{}]}

    @app.post("/pusher/auth", dependencies=auth.security(), response_model=PusherAuth,
              response_class=SafeJSONResponse,
              openapi_extra={"requestBody": PUSHER_AUTH_BODY, **pusher_auth_security},
              responses={**locked, **problems({
                  400: "No `socket_id` or `channel_name`, a body that is not the form or JSON "
                       "object, a malformed `socket_id`, a channel name over 164 characters, "
                       "or a malformed `Content-Length`.",
                  403: "Not a relaycast channel, or the channel authorizer refused it.",
                  503: "Pusher is not configured on this server."})})
    async def pusher_auth(request: Request) -> dict[str, Any]:
        """Sign a pusher-js private-channel subscription: relaycast's own channels for the
        admin; application channels for the admin or whom ``RELAYCAST_CHANNEL_AUTHORIZER``
        allows."""
        admin = auth.allowed(request)
        if not admin and authorizer is None:
            auth.require(request)  # 401
        body = (await request.body()).decode("utf-8", errors="replace")
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                fields = {k: str(v) for k, v in json.loads(body).items()}
            except (ValueError, AttributeError, RecursionError):
                raise HTTPException(status_code=400, detail="invalid JSON body") from None
        else:
            fields = {k: v[0] for k, v in parse_qs(body).items()}
        socket_id, channel = fields.get("socket_id", ""), fields.get("channel_name", "")
        if not socket_id or not channel:
            raise HTTPException(status_code=400, detail="socket_id and channel_name are required")
        problem = channel_name_problem(channel)
        if problem is not None:
            raise HTTPException(status_code=400, detail=problem)
        app_name = None if channels.is_ours(channel) else channels.app_name_of(channel)
        if not channels.is_ours(channel) and app_name is None:
            raise HTTPException(status_code=403,
                                detail=f"not a relaycast channel: {shown_channel(channel)}")
        if not admin:
            if app_name is None:
                auth.require(request)  # relaycast's own channels are the admin's: 401
            assert authorizer is not None and app_name is not None
            if not await ask_authorizer(authorizer, request, app_name):
                raise HTTPException(status_code=403, detail=f"the channel authorizer refused "
                                    f"{shown_channel(channel)}")
        if not settings.provider_configured("pusher"):
            raise HTTPException(status_code=503, detail="Pusher is not configured")
        from broadcasters.pusher import pusher_client

        client = pusher_client(settings)
        try:
            signed: dict[str, Any] = client.authenticate(channel=channel, socket_id=socket_id)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return signed

    app.include_router(build_router(settings, state, auth))
    app.include_router(webhooks.build_router(settings, state))
    return app
