"""The alert webhook (``RELAYCAST_ALERT_WEBHOOK_URL``): one JSON POST per alert, signed when
``RELAYCAST_ALERT_SECRET`` is set, retried with backoff within a bound.

**Signature.** With a secret, every POST carries ``X-Relaycast-Timestamp`` (epoch seconds)
and ``X-Relaycast-Signature: sha256=<hex>``, the HMAC-SHA256 keyed by the secret of
``{timestamp}.{raw body}``. A receiver recomputes it over the bytes it received (before any
JSON parsing), compares in constant time, and refuses a timestamp more than five minutes off
(a replayed request): :func:`verify` does exactly that. Each attempt is signed afresh.

**Timeouts and retries**, with the providers' discipline: each request gives up after
``RELAYCAST_PROVIDER_TIMEOUT_S``; a transient failure (no connection, a timeout, 5xx, 408,
429) is retried at most :data:`ATTEMPTS` times in all, after :func:`~broadcasters.backoff.
compute_backoff` delays (0.5 s, 1 s, … with jitter; a 429's ``Retry-After`` if longer), and
never past the caller's deadline; any other answer (4xx: the URL or the payload is wrong)
is final at once. Nothing raises: :class:`Delivery` says what happened, in one line that
never holds the URL's path (a Slack URL's path is its token) nor the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

import requests

from broadcasters.backoff import compute_backoff
from broadcasters.errors import parse_retry_after
from config import Settings

SIGNATURE_HEADER = "X-Relaycast-Signature"
TIMESTAMP_HEADER = "X-Relaycast-Timestamp"
SIGNATURE_PREFIX = "sha256="
#: A receiver refuses a signature whose timestamp is further than this from its clock.
SIGNATURE_TOLERANCE_S = 300.0
#: Attempts per alert (the first and its retries), and their backoff.
ATTEMPTS = 3
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 4.0
#: Statuses worth another attempt; every other non-2xx answer is final.
RETRYABLE_STATUSES = frozenset({408, 425, 429})
_USER_AGENT = "relaycast-alerts/1"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 keyed by ``secret`` of ``{timestamp}.{body}``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + digest.hexdigest()


def verify(secret: str, body: bytes, headers: Mapping[str, str], *,
           now: float | None = None, tolerance_s: float = SIGNATURE_TOLERANCE_S) -> bool:
    """Does a received alert carry a valid, recent signature? (What a receiver does.)"""
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    signature = lowered.get(SIGNATURE_HEADER.lower(), "")
    try:
        age = abs((time.time() if now is None else now) - float(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def shown(url: str) -> str:
    """The URL as it may be shown: scheme, host and port; the path (a token) hidden."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


@dataclass(frozen=True)
class Delivery:
    """What became of one alert."""

    ok: bool
    attempts: int
    #: The last HTTP status received (None: no answer at all).
    status: int | None = None
    #: Why it failed (one line, no URL path, no secret); None when delivered.
    reason: str | None = None


class WebhookSink:
    """POSTs alert bodies to one URL."""

    def __init__(self, url: str, secret: str | None = None, *, timeout_s: float = 5.0,
                 attempts: int = ATTEMPTS, backoff_base_s: float = BACKOFF_BASE_S,
                 backoff_max_s: float = BACKOFF_MAX_S,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 clock: Callable[[], float] = time.time) -> None:
        if attempts < 1:
            raise ValueError("at least one attempt")
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.session = session or requests.Session()
        self._sleep = sleep
        self._monotonic = monotonic
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Self | None:
        """The sink ``RELAYCAST_ALERT_WEBHOOK_URL`` names (None: alerts are off)."""
        if settings.alert_webhook_url is None:
            return None
        secret = settings.alert_secret.get_secret_value() if settings.alert_secret else None
        options.setdefault("timeout_s", settings.provider_timeout_s)
        return cls(settings.alert_webhook_url.get_secret_value(), secret, **options)

    @property
    def shown_url(self) -> str:
        return shown(self.url)

    def headers(self, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
        if self.secret is not None:
            timestamp = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self.secret, timestamp, body)
        return headers

    def deliver(self, body: bytes, *, deadline: float | None = None,
                attempts: int | None = None) -> Delivery:
        """POST ``body`` until it is taken (2xx), a final answer comes, the attempts run out
        or the next try would pass ``deadline`` (a :func:`time.monotonic` instant)."""
        limit = self.attempts if attempts is None else attempts
        delivery = Delivery(ok=False, attempts=0, reason="not attempted: no time left")
        for attempt in range(limit):
            remaining = None if deadline is None else deadline - self._monotonic()
            if remaining is not None and remaining <= 0:
                break
            timeout = self.timeout_s if remaining is None else max(0.1, min(self.timeout_s,
                                                                            remaining))
            delivery, retry_after_s = self._post(body, attempt + 1, timeout)
            if delivery.ok or retry_after_s is None or attempt + 1 >= limit:
                break
            wait = compute_backoff(attempt, base_s=self.backoff_base_s, max_s=self.backoff_max_s,
                                   retry_after_s=retry_after_s or None)
            if deadline is not None and self._monotonic() + wait >= deadline:
                break
            self._sleep(wait)
        return delivery

    def _post(self, body: bytes, attempt: int, timeout_s: float
              ) -> tuple[Delivery, float | None]:
        """One POST: its :class:`Delivery` and, when another attempt may help, the wait a
        ``Retry-After`` asks for (0.0: none asked); None when it may not (taken, or final)."""
        try:
            response = self.session.post(self.url, data=body, headers=self.headers(body),
                                         timeout=timeout_s, allow_redirects=False)
        except requests.Timeout:
            return Delivery(False, attempt, reason=f"no answer within {timeout_s:g}s"), 0.0
        except requests.ConnectionError as exc:
            return Delivery(False, attempt, reason=f"cannot connect ({_cause(exc)})"), 0.0
        except requests.RequestException as exc:
            return Delivery(False, attempt, reason=f"request failed ({type(exc).__name__})"), None
        status = response.status_code
        if 200 <= status < 300:
            return Delivery(True, attempt, status=status), None
        reason = f"HTTP {status}" + (f": {_excerpt(response.text)}" if response.text.strip() else "")
        delivery = Delivery(False, attempt, status=status, reason=reason)
        if status >= 500 or status in RETRYABLE_STATUSES:
            return delivery, parse_retry_after(response.headers.get("Retry-After"), 0.0)
        return delivery, None

    def close(self) -> None:
        self.session.close()


def _cause(exc: BaseException) -> str:
    """The innermost cause's class (requests' own messages hold the URL, path included)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    name = type(exc).__name__
    errno = getattr(exc, "errno", None)
    return f"{name}, errno {errno}" if errno else name


def _excerpt(text: str, limit: int = 120) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit] + "…"
