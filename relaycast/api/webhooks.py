"""``POST /pusher/webhook``: channel occupancy from Pusher's (or soketi's) signed webhooks.

Point Pusher's dashboard webhooks ("Channel existence": ``channel_occupied`` and
``channel_vacated``) at ``https://<your api>/pusher/webhook``; docker-compose configures
soketi to send them here. The endpoint needs no token — the provider has none — it is
authenticated by the webhook's signature: the app key in ``X-Pusher-Key``, the hex
HMAC-SHA256 of the raw body with the app secret in ``X-Pusher-Signature``, and a ``time_ms``
within five minutes (the checks of the pusher SDK's ``validate_webhook``, made here because
the SDK raises on a signed body of the wrong shape and cannot tell non-JSON from a forgery).

Answers, in the order they are decided:

* 413: a body over the API's cap (:data:`relaycast.api.app.MAX_BODY_BYTES`, decided before it
  is read; the webhooks Pusher sends are a few hundred bytes);
* 401: no signature, a wrong key or signature, or a ``time_ms`` more than five minutes off
  (a replay); nothing is recorded;
* 400 with a one-line reason: a correctly signed body that is not a webhook (not JSON, not an
  object, ``time_ms`` not a number, ``events`` not a list, an event without a string ``name``
  and ``channel``);
* 200 ``{"ok", "recorded", "ignored"}``: occupancy of relaycast's log channels is recorded in
  Redis for every worker (:mod:`broadcasters.occupancy`). relaycast's other channels (admin,
  application) and other event kinds are skipped; an event on a channel that is not
  relaycast's, or over Pusher's 164 characters (:data:`broadcasters.wire.MAX_CHANNEL_CHARS`),
  is ignored, counted in ``ignored`` and logged (one line per webhook, the name cut short);
* 503: Redis unreachable, so that Pusher sends the webhook again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import time

from fastapi import APIRouter, HTTPException, Request

from broadcasters.backends import StateUnavailable
from broadcasters.occupancy import Occupancy
from broadcasters.state import SharedState
from broadcasters.wire import MAX_CHANNEL_CHARS, Channels, shown_channel
from config import Settings
from relaycast.api.schemas import PUSHER_WEBHOOK_EXTRA, SafeJSONResponse, WebhookAnswer, problems

logger = logging.getLogger(__name__)

OCCUPIED, VACATED = "channel_occupied", "channel_vacated"
#: How far a webhook's ``time_ms`` may be from now (the pusher SDK's window).
MAX_SKEW_MS = 300_000


class MalformedWebhook(ValueError):
    """A correctly signed body that is not a Pusher webhook (400, this message)."""


def signed_by(key: str, secret: str, given_key: str, signature: str, body: bytes) -> bool:
    """``body`` carries the app's key and its hex HMAC-SHA256 with the app's secret."""
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given_key.encode("utf-8"), key.encode("utf-8")) and \
        hmac.compare_digest(signature.strip().lower().encode("utf-8"), expected.encode("utf-8"))


def parse_webhook(body: bytes) -> tuple[int, list[tuple[str, str]]]:
    """``(time_ms, [(name, channel), ...])`` of a webhook body, or :class:`MalformedWebhook`
    saying in one line what is wrong with it."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise MalformedWebhook("body is nested too deeply to be a webhook") from None
    except ValueError:  # also invalid UTF-8 (UnicodeDecodeError)
        raise MalformedWebhook("body is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedWebhook("body must be a JSON object with time_ms and events, not a "
                               f"{type(data).__name__}")
    time_ms = data.get("time_ms")
    if isinstance(time_ms, bool) or not isinstance(time_ms, int | float) or (
            isinstance(time_ms, float) and not math.isfinite(time_ms)):
        raise MalformedWebhook("time_ms must be a number (epoch milliseconds)")
    events = data.get("events")
    if not isinstance(events, list):
        raise MalformedWebhook("events must be a list")
    parsed = []
    for index, event in enumerate(events):
        name = event.get("name") if isinstance(event, dict) else None
        channel = event.get("channel") if isinstance(event, dict) else None
        if not isinstance(name, str) or not isinstance(channel, str):
            raise MalformedWebhook(f"events[{index}] must be an object with a string name and "
                                   "channel")
        parsed.append((name, channel))
    return int(time_ms), parsed


def build_router(settings: Settings, state: SharedState) -> APIRouter:
    router = APIRouter()
    channels = Channels(settings.channel_prefix)
    occupancy = Occupancy.for_settings(settings, state)

    @router.post("/pusher/webhook", response_model=WebhookAnswer, response_class=SafeJSONResponse,
                 openapi_extra=PUSHER_WEBHOOK_EXTRA,
                 responses=problems({
                     400: "Correctly signed, but not a Pusher webhook (`detail` says why), or a "
                          "malformed `Content-Length`.",
                     401: "No signature, a wrong key or signature, or a `time_ms` more than five "
                          "minutes off (a replay): nothing is recorded.",
                     503: "Pusher is not configured on this server, or Redis is unreachable "
                          "(Pusher sends the webhook again)."}))
    async def pusher_webhook(request: Request) -> WebhookAnswer:
        """Channel occupancy from Pusher's (or soketi's) signed webhooks. No token: the
        webhook's signature authenticates it."""
        if not settings.provider_configured("pusher"):
            raise HTTPException(status_code=503, detail="Pusher is not configured")
        assert settings.pusher_key is not None and settings.pusher_secret is not None
        key = request.headers.get("x-pusher-key")
        signature = request.headers.get("x-pusher-signature")
        if not key or not signature:
            raise HTTPException(status_code=401, detail="unsigned webhook")
        body = await request.body()  # at most MAX_BODY_BYTES: the API's BodyLimit cut it
        if not signed_by(settings.pusher_key, settings.pusher_secret.get_secret_value(), key,
                         signature, body):
            raise HTTPException(status_code=401, detail="webhook signature or key refused")
        try:
            time_ms, events = parse_webhook(body)
        except MalformedWebhook as exc:
            raise HTTPException(status_code=400, detail=f"not a Pusher webhook: {exc}") from None
        if abs(time.time() * 1000 - time_ms) > MAX_SKEW_MS:
            raise HTTPException(status_code=401, detail="webhook time_ms is more than five "
                                "minutes off: refused")
        changes, ignored = [], []
        for name, channel in events:
            if name not in (OCCUPIED, VACATED):
                continue  # other webhook kinds (presence, client events): nothing to record
            if channels.run_id_of(channel) is not None:
                changes.append((channel, name == OCCUPIED))
            elif len(channel) > MAX_CHANNEL_CHARS or not (
                    channels.is_ours(channel) or channels.app_name_of(channel) is not None):
                ignored.append(channel)
            # else relaycast's admin or an application channel: always published, not gated
        if ignored:
            logger.warning("pusher webhook: %d event(s) ignored: channel not relaycast's or over "
                           "%d characters (e.g. %s)", len(ignored), MAX_CHANNEL_CHARS,
                           shown_channel(ignored[0]))
        if occupancy is None:
            return {"ok": True, "recorded": 0, "ignored": len(ignored), "occupancy": "off"}
        try:
            recorded = occupancy.record(changes, time_ms)
        except StateUnavailable:
            raise HTTPException(status_code=503, detail="shared state unreachable: send it again"
                                ) from None
        return {"ok": True, "recorded": len(recorded), "ignored": len(ignored)}

    return router
