"""Pusher Channels through the ``pusher`` package (and any Pusher-protocol server, e.g. soketi).

Messages go out with ``trigger_batch``, at most 10 events a request (the hosted clusters'
limit, which the library does not enforce). The library mutates the dicts it is given,
so every request is built from fresh dicts. Its own size check uses ``sys.getsizeof``, which
refuses 3 KB of text holding one emoji and lets 30 KB of ASCII through, so messages are passed
``already_encoded`` and :class:`~broadcasters.base.Broadcaster` checks their UTF-8 bytes.
``private-encrypted-`` channels are therefore not supported (the library encrypts only
when it encodes).

Failures are classified from the HTTP status and body: a ``requests`` response hook
raises :class:`HTTPStatusError` for any non-2xx answer, with the ``Retry-After`` header
that the library's own exceptions would drop.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Self

import pusher
import requests
from pusher.requests import RequestsBackend

from broadcasters.base import Broadcaster, Message
from broadcasters.errors import (
    BadRequest,
    BroadcastError,
    PayloadTooLarge,
    TransientError,
    classify_http,
)
from broadcasters.packing import REQUEST_EVENTS
from config import Settings


class HTTPStatusError(Exception):
    """A non-2xx answer, raised by the response hook before the library parses it."""

    def __init__(self, status: int, body: str, retry_after: str | None) -> None:
        super().__init__(f"{status}: {body[:200]}")
        self.status = status
        self.body = body
        self.retry_after = retry_after


def _raise_for_status(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    status = response.status_code
    if status in (200, 202) and '"error"' in response.text:
        # soketi writes its status line after a header, so uWebSockets has already sent
        # "200 OK": its errors arrive as 200 with {"error": ..., "code": 413|429|...}.
        try:
            body = json.loads(response.text)
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("code"), int) and body["code"] >= 400:
            status = body["code"]
    if status not in (200, 202):
        raise HTTPStatusError(status, response.text, response.headers.get("Retry-After"))


class StatusCheckingBackend(RequestsBackend):  # type: ignore[misc]
    """The library's requests backend, with the status hook on its session."""

    def __init__(self, client: Any, **options: Any) -> None:
        super().__init__(client, **options)
        self.session.hooks["response"].append(_raise_for_status)


def pusher_client(settings: Settings) -> pusher.Pusher:
    """A ``pusher.Pusher`` from the settings (host/port/ssl for a self-hosted server)."""
    assert settings.pusher_secret is not None
    options: dict[str, Any] = {
        "app_id": settings.pusher_app_id,
        "key": settings.pusher_key,
        "secret": settings.pusher_secret.get_secret_value(),
        "ssl": settings.pusher_ssl,
        "timeout": settings.provider_timeout_s,
        "backend": StatusCheckingBackend,
    }
    if settings.pusher_host:
        options["host"] = settings.pusher_host
        if settings.pusher_port:
            options["port"] = settings.pusher_port
    else:
        options["cluster"] = settings.pusher_cluster_or_default
    return pusher.Pusher(**options)


class PusherBroadcaster(Broadcaster):
    name = "pusher"
    max_batch = REQUEST_EVENTS

    def __init__(self, client: pusher.Pusher, *, max_message_bytes: int = 10_000,
                 default_retry_after_s: float = 1.0) -> None:
        self.client = client
        self.max_message_bytes = max_message_bytes
        self._default_retry_after_s = default_retry_after_s

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(pusher_client(settings), max_message_bytes=settings.pusher_max_event_bytes,
                   default_retry_after_s=settings.rate_limit_pause_s)

    def _publish(self, messages: Sequence[Message]) -> None:
        batch = []
        for message in messages:
            event: dict[str, Any] = {
                "channel": message.channel, "name": message.event, "data": message.payload,
            }
            if message.socket_id:
                event["socket_id"] = message.socket_id
            batch.append(event)
        # already_encoded: data is our JSON string, checked in UTF-8 bytes by Broadcaster.send;
        # the library's own check (sys.getsizeof) refuses short non-Latin-1 text.
        self.client.trigger_batch(batch, already_encoded=True)

    def _classify(self, exc: Exception) -> BroadcastError:
        if isinstance(exc, HTTPStatusError):
            return classify_http(exc.status, exc.body, retry_after=exc.retry_after,
                                 default_retry_after_s=self._default_retry_after_s)
        if isinstance(exc, requests.RequestException):
            return TransientError(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, ValueError):
            if "too much data" in str(exc).lower():
                return PayloadTooLarge(str(exc))
            return BadRequest(str(exc))
        return super()._classify(exc)

    def close(self) -> None:
        # pusher.Pusher holds a client for the API and one for authentication: close both.
        for part in ("_pusher_client", "_authentication_client"):
            backend = getattr(getattr(self.client, part, None), "http", None)
            session = getattr(backend, "session", None)
            if isinstance(session, requests.Session):
                session.close()
