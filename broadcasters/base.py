"""The ``Broadcaster`` interface and the message it carries.

Template method (after dramatiq's ``RateLimiter.acquire`` / ``_acquire``): the public
:meth:`Broadcaster.send` checks sizes, splits the messages into provider requests, times
each request, classifies failures and reports per message; a subclass implements only
:meth:`Broadcaster._publish` (one provider request) and, where its SDK raises its own
exceptions, :meth:`Broadcaster._classify`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Self

from broadcasters.errors import BroadcastError, PayloadTooLarge, TransientError

if TYPE_CHECKING:
    from config import Settings

logger = logging.getLogger(__name__)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(text: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", text) if _LONE_SURROGATE.search(text) else text


def encode_json(value: Any) -> str:
    """Compact JSON as sent on the wire; anything JSON cannot hold becomes its ``str``.

    The result is always encodable as UTF-8: a lone surrogate (a file name that was not
    UTF-8, decoded with ``os.fsdecode``) that reached this far becomes U+FFFD, so that one
    line can never stop a message, or a batch, from being sent.
    """
    return without_lone_surrogates(
        json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


@dataclass(frozen=True)
class Message:
    """One provider message: ``payload`` is the event's data, already JSON-encoded.

    ``id`` is stable across retries (log messages use ``{run_id}:{first}-{last}``) so a
    provider's idempotent publishing and a client's de-duplication line up. ``seqs`` is the
    (first, last) sequence range a log message carries, for bookkeeping.
    """

    channel: str
    event: str
    payload: str
    id: str
    socket_id: str | None = None
    seqs: tuple[int, int] | None = None

    @classmethod
    def from_data(
        cls, channel: str, event: str, data: Any, message_id: str, socket_id: str | None = None
    ) -> Message:
        return cls(channel, event, encode_json(data), message_id, socket_id)

    @cached_property
    def size_bytes(self) -> int:
        return len(self.payload.encode("utf-8"))

    @property
    def data(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Attempt:
    """What one :meth:`Broadcaster.send` call did, message by message (the manager's
    :class:`~broadcasters.manager.SendReport` sums the attempts of every broadcaster)."""

    broadcaster: str
    delivered: list[Message] = field(default_factory=list)
    failed: list[tuple[Message, BroadcastError]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)


class Broadcaster(ABC):
    """A provider adapter. Subclasses set ``name``, ``max_message_bytes``, ``max_batch``,
    and ``live`` (False for sinks such as ``log`` that no browser receives)."""

    name: str = "base"
    #: Does a delivery reach subscribers? A line only a non-live broadcaster took is still
    #: owed to a live one (the manager keeps it pending).
    live: bool = True
    #: Largest ``payload`` (UTF-8 bytes) the provider accepts for one message.
    max_message_bytes: int = 10_000
    #: Messages per provider request.
    max_batch: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The broadcaster as configured; those with nothing to configure take no arguments."""
        return cls()

    def send(self, messages: Sequence[Message]) -> Attempt:
        """Send ``messages``; never raises for a provider failure, reports it per message.

        A retryable failure concerns the provider rather than the request (quota, auth, rate
        limit, transient): it stops the call, and the remaining messages fail with the same
        error without a request, so a spent quota or an outage costs one request, not one per
        batch. A final one (too large, bad request) fails that request's messages only.
        """
        result = Attempt(self.name)
        sendable: list[Message] = []
        for message in messages:
            if message.size_bytes > self.max_message_bytes:
                result.failed.append((message, PayloadTooLarge(
                    f"{message.size_bytes} bytes > {self.max_message_bytes} for {self.name}"
                )))
            else:
                sendable.append(message)
        step = max(1, self.max_batch)
        for start in range(0, len(sendable), step):
            chunk = sendable[start : start + step]
            started = time.perf_counter()
            error: BroadcastError | None = None
            try:
                self._publish(chunk)
            except BroadcastError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - every vendor failure is classified
                error = self._classify(exc)
                error.__cause__ = exc
            result.latencies_ms.append((time.perf_counter() - started) * 1000.0)
            if error is None:
                result.delivered.extend(chunk)
                continue
            logger.warning(
                "broadcaster=%s request of %d message(s) failed: %s", self.name, len(chunk), error
            )
            if not error.retryable:
                result.failed.extend((message, error) for message in chunk)
                continue
            result.failed.extend((message, error) for message in sendable[start:])
            break
        return result

    @abstractmethod
    def _publish(self, messages: Sequence[Message]) -> None:
        """Send one provider request carrying ``messages``; raise on failure."""

    def _classify(self, exc: Exception) -> BroadcastError:
        """Map an exception the SDK raised; by default anything unknown is transient."""
        return TransientError(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and sessions."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
