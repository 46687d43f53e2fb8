"""``POST /pusher/webhook``: channel occupancy from Pusher's (or soketi's) signed webhooks.

Point Pusher's dashboard webhooks ("Channel existence": ``channel_occupied`` and
``channel_vacated``) at ``https://<your api>/pusher/webhook``; docker-compose configures
soketi to send them here. The endpoint needs no token — the provider has none — it is
authenticated by the webhook's signature, checked with the pusher SDK's own
``validate_webhook`` (the app key in ``X-Pusher-Key``, the hex HMAC-SHA256 of the raw body
with the app secret in ``X-Pusher-Signature``, and a ``time_ms`` within five minutes).
Anything else answers 401 and records nothing. Occupancy of relaycast's log channels is
recorded in Redis for every worker (:mod:`broadcasters.occupancy`); other channels are
ignored. With Redis unreachable it answers 503, so that Pusher sends the webhook again.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from broadcasters.backends import StateUnavailable
from broadcasters.occupancy import Occupancy
from broadcasters.state import SharedState
from broadcasters.wire import Channels
from config import Settings

OCCUPIED, VACATED = "channel_occupied", "channel_vacated"


def build_router(settings: Settings, state: SharedState) -> APIRouter:
    router = APIRouter()
    channels = Channels(settings.channel_prefix)
    occupancy = Occupancy.for_settings(settings, state)

    @router.post("/pusher/webhook")
    async def pusher_webhook(request: Request) -> dict[str, Any]:
        if not settings.provider_configured("pusher"):
            raise HTTPException(status_code=503, detail="Pusher is not configured")
        key = request.headers.get("x-pusher-key")
        signature = request.headers.get("x-pusher-signature")
        body = await request.body()
        if not key or not signature:
            raise HTTPException(status_code=401, detail="unsigned webhook")
        from broadcasters.pusher import pusher_client

        parsed = pusher_client(settings).validate_webhook(
            key=key, signature=signature, body=body.decode("utf-8", errors="replace"))
        if not isinstance(parsed, dict):
            raise HTTPException(status_code=401, detail="webhook signature, key or time refused")
        changes = [(str(event["channel"]), event["name"] == OCCUPIED)
                   for event in parsed.get("events", [])
                   if isinstance(event, dict) and event.get("name") in (OCCUPIED, VACATED)
                   and channels.run_id_of(str(event.get("channel", ""))) is not None]
        if occupancy is None:
            return {"ok": True, "recorded": 0, "occupancy": "off"}
        try:
            recorded = occupancy.record(changes, int(parsed["time_ms"]))
        except StateUnavailable:
            raise HTTPException(status_code=503, detail="shared state unreachable: send it again"
                                ) from None
        return {"ok": True, "recorded": len(recorded)}

    return router
