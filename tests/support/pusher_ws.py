"""A minimal Pusher-protocol (v7) WebSocket subscriber for tests.

It plays the part of the browser: connects to soketi, subscribes to public or
private channels and records every event it receives.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import websocket

_RECV_POLL_S = 0.2
_KEEPALIVE_S = 30.0


def sign_channel(key: str, secret: str, socket_id: str, channel: str) -> str:
    """The ``auth`` value Pusher expects for a private channel subscription."""
    digest = hmac.new(secret.encode("utf-8"), f"{socket_id}:{channel}".encode(), hashlib.sha256).hexdigest()
    return f"{key}:{digest}"


def _decode_data(data: Any) -> Any:
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


class SubscriptionError(RuntimeError):
    """The server refused a subscription (or sent pusher:error while subscribing)."""


class Subscriber:
    """Connects to ``ws://host:port/app/{key}`` and records events.

    Every received event (except pusher:ping / pusher:pong) is stored as
    ``{"channel": str | None, "event": str, "data": Any, "received_at": monotonic s}`` where ``data`` is
    JSON-decoded when it is a JSON string.
    """

    def __init__(
        self,
        host: str,
        port: int,
        key: str,
        secret: str | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.key = key
        self.secret = secret
        self.url = f"ws://{host}:{port}/app/{key}?protocol=7&client=relaycast-tests&version=1"
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._closed_reason: str | None = None
        self._last_activity = time.monotonic()

        self._ws: websocket.WebSocket = websocket.create_connection(self.url, timeout=connect_timeout_s)
        try:
            first = json.loads(self._ws.recv())
            if first.get("event") == "pusher:error":
                raise ConnectionError(
                    f"{self.url} refused the connection: {_decode_data(first.get('data'))!r}"
                )
            if first.get("event") != "pusher:connection_established":
                raise ConnectionError(f"unexpected first frame from {self.url}: {first!r}")
            established = _decode_data(first.get("data"))
            self.socket_id: str = str(established["socket_id"])
            self.activity_timeout: int | None = established.get("activity_timeout")
        except BaseException:
            self._ws.close()
            raise
        self._ws.settimeout(_RECV_POLL_S)
        self._thread = threading.Thread(
            target=self._run, name=f"pusher-subscriber-{self.socket_id}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ receive loop
    def _send(self, payload: dict[str, Any]) -> None:
        self._ws.send(json.dumps(payload))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self._ws.recv()
            except websocket.WebSocketTimeoutException:
                if time.monotonic() - self._last_activity > _KEEPALIVE_S:
                    self._last_activity = time.monotonic()
                    try:
                        self._send({"event": "pusher:ping", "data": {}})
                    except Exception as exc:
                        self._closed_reason = f"keepalive failed: {exc!r}"
                        return
                continue
            except websocket.WebSocketConnectionClosedException as exc:
                self._closed_reason = f"connection closed by server: {exc}"
                return
            except Exception as exc:
                if not self._stop.is_set():
                    self._closed_reason = f"receive failed: {exc!r}"
                return
            self._last_activity = time.monotonic()
            if not raw:
                # websocket-client returns "" for a close frame.
                self._closed_reason = "connection closed by server"
                return
            try:
                frame = json.loads(raw)
            except ValueError:
                frame = {"event": "<non-json>", "data": raw}
            if not isinstance(frame, dict):
                continue
            event = frame.get("event")
            if event == "pusher:ping":
                try:
                    self._send({"event": "pusher:pong", "data": {}})
                except Exception as exc:
                    self._closed_reason = f"pong failed: {exc!r}"
                    return
                continue
            if event == "pusher:pong":
                continue
            record = {
                "channel": frame.get("channel"),
                "event": event,
                "data": _decode_data(frame.get("data")),
                "received_at": time.monotonic(),
            }
            with self._lock:
                self._events.append(record)

    # ------------------------------------------------------------------ public API
    @property
    def closed_reason(self) -> str | None:
        """Why the connection ended, or None while it is open."""
        return self._closed_reason

    def subscribe(self, channel: str, timeout_s: float = 5.0, auth: str | None = None) -> None:
        """Subscribe and wait for ``pusher_internal:subscription_succeeded``.

        Private channels are signed with ``secret`` unless ``auth`` is given.
        """
        data: dict[str, Any] = {"channel": channel}
        if auth is None and channel.startswith("private-"):
            if self.secret is None:
                raise ValueError(f"subscribing to {channel!r} needs a secret or an auth value")
            auth = sign_channel(self.key, self.secret, self.socket_id, channel)
        if auth is not None:
            data["auth"] = auth
        with self._lock:
            start = len(self._events)
        self._send({"event": "pusher:subscribe", "data": data})

        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                new = self._events[start:]
            for ev in new:
                name = ev["event"]
                if name == "pusher_internal:subscription_succeeded" and ev["channel"] == channel:
                    return
                if name == "pusher:subscription_error" and ev["channel"] in (channel, None):
                    raise SubscriptionError(f"subscription to {channel!r} refused: {ev['data']!r}")
                if name == "pusher:error":
                    raise SubscriptionError(f"pusher:error while subscribing to {channel!r}: {ev['data']!r}")
            if self._closed_reason is not None:
                raise SubscriptionError(
                    f"connection ended while subscribing to {channel!r}: {self._closed_reason}"
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no subscription_succeeded for {channel!r} within {timeout_s}s; "
                    f"received: {self._summary(new)}"
                )
            time.sleep(0.01)

    def unsubscribe(self, channel: str) -> None:
        self._send({"event": "pusher:unsubscribe", "data": {"channel": channel}})

    def events(self, channel: str | None = None, event: str | None = None) -> list[dict[str, Any]]:
        """Snapshot of recorded events, optionally filtered by channel and/or event name."""
        with self._lock:
            snapshot = list(self._events)
        return self._filter(snapshot, channel, event)

    def wait_for(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout_s: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Poll the event snapshot until ``predicate(snapshot)`` is true; return it.

        Raises AssertionError (with a summary of what arrived) on timeout, or
        as soon as the connection has ended and the predicate is still false.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            snapshot = self.events()
            if predicate(snapshot):
                return snapshot
            if self._closed_reason is not None:
                raise AssertionError(
                    f"connection ended ({self._closed_reason}) before the condition held; "
                    f"received: {self._summary(snapshot)}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"condition not met within {timeout_s}s; received: {self._summary(snapshot)}"
                )
            time.sleep(0.02)

    def wait_for_events(
        self,
        channel: str | None = None,
        event: str | None = None,
        count: int = 1,
        timeout_s: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` matching events arrived; return the matches."""

        def enough(snapshot: list[dict[str, Any]]) -> bool:
            return len(self._filter(snapshot, channel, event)) >= count

        return self._filter(self.wait_for(enough, timeout_s), channel, event)

    def send_raw(self, payload: dict[str, Any]) -> None:
        """Send an arbitrary frame (e.g. a client event or a pusher:ping)."""
        self._send(payload)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        try:
            self._ws.close(timeout=1.0)
        except Exception:
            self._ws.shutdown()  # type: ignore[no-untyped-call]
        if self._closed_reason is None:
            self._closed_reason = "closed by client"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _filter(
        snapshot: list[dict[str, Any]], channel: str | None, event: str | None
    ) -> list[dict[str, Any]]:
        return [
            ev
            for ev in snapshot
            if (channel is None or ev["channel"] == channel) and (event is None or ev["event"] == event)
        ]

    @staticmethod
    def _summary(snapshot: list[dict[str, Any]], limit: int = 20) -> str:
        if not snapshot:
            return "nothing"
        lines = []
        for ev in snapshot[-limit:]:
            data = repr(ev["data"])
            if len(data) > 200:
                data = data[:200] + "..."
            lines.append(f"  {ev['channel']!r} {ev['event']!r} {data}")
        skipped = len(snapshot) - limit
        head = f"{len(snapshot)} events" + (f" (last {limit} shown)" if skipped > 0 else "")
        return head + ":\n" + "\n".join(lines)


if TYPE_CHECKING:
    from .servers import Soketi


class SubscriberFactory(Protocol):
    """Type of the ``subscriber_factory`` fixture; subscribers are closed at teardown.

    ``server`` defaults to the session ``soketi``; ``key``/``secret`` default to the server's.
    """

    def __call__(
        self, server: Soketi | None = None, *, key: str | None = None, secret: str | None = None
    ) -> Subscriber: ...
