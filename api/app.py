"""HTTP endpoints for the admin UI and browsers.

* ``GET /admin/broadcaster-status``: the latest health report (computed live when none).
* ``GET /runs/{run_id}/logs?after_seq=N``: a run's stored lines, for page load and catch-up
  after a reconnect (pusher-js does not replay missed messages).
* ``POST /pusher/auth``: signs pusher-js private-channel subscriptions, for relaycast's own
  channels only (``{prefix}logs-*``, ``{prefix}admin-*``).

With ``RELAYCAST_ADMIN_TOKEN`` set, every endpoint needs ``Authorization: Bearer <token>``
or the viewer's session cookie (:mod:`api.auth`); without it, ``relaycast api`` listens on
loopback only. The viewer's pages and their JSON are in :mod:`api.ui`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from config import Settings

MAX_PAGE = 10_000


def create_app(settings: Settings) -> FastAPI:
    from api.auth import Auth
    from api.ui import build_router, sent_per_minute
    from broadcasters.factory import build_state
    from workflows.log_stream import InvalidRunId, validate_run_id
    from workflows.store import store_for

    app = FastAPI(title="relaycast", version="0.1.0")
    state = build_state(settings)
    auth = Auth(settings.admin_token.get_secret_value() if settings.admin_token else None)
    guard = [Depends(auth.require)]

    @app.get("/admin/broadcaster-status", dependencies=guard)
    def broadcaster_status() -> JSONResponse:
        from tasks.health import current_report

        report = current_report(settings, state)
        return JSONResponse({**report.model_dump(mode="json"), **sent_per_minute(settings, state)},
                            status_code=200)

    @app.get("/runs/{run_id}/logs", dependencies=guard)
    def run_logs(run_id: str,
                 after_seq: Annotated[int, Query(ge=0)] = 0,
                 limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE) -> dict[str, Any]:
        try:
            validate_run_id(run_id, settings.channel_prefix)
        except InvalidRunId as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        lines = store_for(settings.database_url_or_default).lines(run_id, after_seq, limit)
        return {
            "run_id": run_id,
            "channel": f"{settings.channel_prefix}logs-{run_id}",
            "events": [{"seq": x.seq, "ts": x.ts, "level": x.level, "message": x.message,
                        "data": x.data} for x in lines],
            "next_after_seq": lines[-1].seq if lines else after_seq,
        }

    @app.post("/pusher/auth", dependencies=guard)
    async def pusher_auth(request: Request) -> dict[str, Any]:
        body = (await request.body()).decode("utf-8", errors="replace")
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                fields = {k: str(v) for k, v in json.loads(body).items()}
            except (ValueError, AttributeError):
                raise HTTPException(status_code=400, detail="invalid JSON body") from None
        else:
            fields = {k: v[0] for k, v in parse_qs(body).items()}
        socket_id, channel = fields.get("socket_id", ""), fields.get("channel_name", "")
        if not socket_id or not channel:
            raise HTTPException(status_code=400, detail="socket_id and channel_name are required")
        prefix = settings.channel_prefix
        ours = (channel.startswith(f"{prefix}logs-") or channel.startswith(f"{prefix}admin-"))
        if not channel.startswith("private-") or channel.startswith("private-encrypted-") or not ours:
            raise HTTPException(status_code=403, detail=f"not a relaycast channel: {channel}")
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
    return app
