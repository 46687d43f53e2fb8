"""Ably (the fallback provider) through the ``ably`` SDK's synchronous REST client.

``ably.AblyRest`` is asyncio-only; ``ably.sync.AblyRestSync`` is the same client generated
for synchronous code, which is what a Celery task needs.

* One publish (``POST /channels/{name}/messages``) per channel carries that channel's
  messages as a list, split only where the messages together would exceed the 64 KiB Ably
  allows per publish (the SDK's realtime client applies that limit to everything published
  at once). A request that fails raises, and :class:`~broadcasters.base.Broadcaster` fails
  the whole call; messages sent before it went through and come again on the retry, where
  their ids make Ably drop the repeat.
* Every message carries the relaycast ``Message.id`` (``{run_id}:{first}-{last}``) as its
  Ably id: idempotent publishing de-duplicates SDK retries and our own.
* ``data`` is the relaycast payload (a JSON string) sent as is, with ``encoding: "json"``:
  exactly what the SDK sends for a dict, so subscribers' SDKs decode it to the same object
  Pusher subscribers get, without decoding and re-encoding it here (the SDK's
  ``json.dumps`` would also escape non-ASCII text, so a payload checked at 65,000 UTF-8
  bytes could go out larger).
* JSON protocol (``use_binary_protocol=False``). With ``ABLY_REST_HOST`` set the request
  goes to that host only: no fallback hosts. With ``ABLY_TLS=false`` the SDK refuses basic
  auth (error 40103), so the key signs token requests instead and never goes on the wire.

Failures are classified by Ably error code (see :func:`classify_ably`), never by the
exception class: the account message limit (40112) arrives as HTTP 401, which the SDK
raises as ``AblyAuthException`` like a rejected key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Self

import httpx
from ably.sync import AblyException, AblyRestSync
from ably.sync.types.message import Message as AblyMessage

from broadcasters.base import Broadcaster, Message
from broadcasters.errors import (
    AuthFailed,
    BadRequest,
    BroadcastError,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    TransientError,
)
from config import Settings

#: Ably's limit for everything one publish carries (data, name, client id, extras).
ABLY_MAX_PUBLISH_BYTES = 65_536


class _RedactCredentials(logging.Filter):
    """The SDK's token auth logs its options (the key secret included) and the token at DEBUG."""

    _PREFIXES = ("Auth options:", "Token:")

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        for prefix in self._PREFIXES:
            if message.startswith(prefix):
                record.msg, record.args = f"{prefix} [redacted by relaycast]", None
        return True


for _logger_name in ("ably.sync.rest.auth", "ably.rest.auth"):
    logging.getLogger(_logger_name).addFilter(_RedactCredentials())


def ably_client(settings: Settings) -> Any:
    """An ``AblyRestSync`` from the settings (host/port/tls for a local or self-hosted server)."""
    assert settings.ably_api_key is not None
    timeout = settings.provider_timeout_s
    options: dict[str, Any] = {
        "key": settings.ably_api_key.get_secret_value(),
        "tls": settings.ably_tls,
        "use_binary_protocol": False,
        "idempotent_rest_publishing": True,
        "http_open_timeout": timeout,
        "http_request_timeout": timeout,
        # Bounds the SDK's own retries on Ably's fallback hosts (production only).
        "http_max_retry_duration": timeout,
    }
    if settings.ably_rest_host:
        # ``endpoint`` is what the SDK turns the deprecated ``rest_host`` into (without the
        # deprecation warning); a custom host gets no fallback hosts: never another host.
        options["endpoint"] = settings.ably_rest_host
        options["fallback_hosts"] = []
    if settings.ably_rest_port:
        options["tls_port" if settings.ably_tls else "port"] = settings.ably_rest_port
    if not settings.ably_tls:
        options["use_token_auth"] = True
    return AblyRestSync(**options)


def classify_ably(exc: AblyException, *, default_retry_after_s: float = 1.0) -> BroadcastError:
    """Map an Ably error (``code``, ``status_code``) to the taxonomy, by code first."""
    status = exc.status_code if isinstance(exc.status_code, int) else None
    try:
        code = int(exc.code)
    except (TypeError, ValueError):
        code = (status or 500) * 100
    detail = f"Ably {code}: {exc.message or ''}".strip()[:300]
    if code == 40112:
        return QuotaExceeded(detail, status=status)
    if 40100 <= code < 40200 or 40300 <= code < 40400 or status in (401, 403):
        return AuthFailed(detail, status=status)
    if 42900 <= code < 43000 or status == 429:
        # The SDK keeps no response headers on its exception: no Retry-After to read.
        return RateLimited(detail, retry_after_s=default_retry_after_s, status=status)
    if code == 40009 or status == 413:
        return PayloadTooLarge(detail, status=status)
    if code >= 50000 or (status is not None and status >= 500) or status == 408:
        return TransientError(detail, status=status)
    return BadRequest(detail, status=status)


def _publishes(messages: Sequence[Message], max_bytes: int) -> list[list[Message]]:
    """Messages grouped by channel (in first-seen order), each group within ``max_bytes``."""
    groups: dict[str, list[list[Message]]] = {}
    sizes: dict[str, int] = {}
    for message in messages:
        size = message.size_bytes + len(message.event.encode("utf-8"))
        chunks = groups.setdefault(message.channel, [[]])
        if chunks[-1] and sizes[message.channel] + size > max_bytes:
            chunks.append([])
            sizes[message.channel] = 0
        chunks[-1].append(message)
        sizes[message.channel] = sizes.get(message.channel, 0) + size
    return [chunk for chunks in groups.values() for chunk in chunks]


class AblyBroadcaster(Broadcaster):
    name = "ably"
    max_batch = 1000

    def __init__(self, client: Any, *, max_message_bytes: int = 65_000,
                 default_retry_after_s: float = 1.0) -> None:
        self.client = client
        self.max_message_bytes = max_message_bytes
        self._default_retry_after_s = default_retry_after_s

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(ably_client(settings), default_retry_after_s=settings.rate_limit_pause_s)

    def _publish(self, messages: Sequence[Message]) -> None:
        for group in _publishes(messages, ABLY_MAX_PUBLISH_BYTES):
            name = group[0].channel
            try:
                self.client.channels.get(name).publish([
                    AblyMessage(name=m.event, data=m.payload, id=m.id, encoding="json")
                    for m in group
                ])
            finally:
                # The SDK keeps every channel object it hands out; runs are endless, so let go.
                self.client.channels.release(name)

    def _classify(self, exc: Exception) -> BroadcastError:
        if isinstance(exc, AblyException):
            return classify_ably(exc, default_retry_after_s=self._default_retry_after_s)
        if isinstance(exc, httpx.TransportError):  # timeouts, refused or dropped connections
            return TransientError(f"{type(exc).__name__}: {exc}")
        return super()._classify(exc)

    def close(self) -> None:
        self.client.close()
