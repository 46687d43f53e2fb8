"""A python-socketio client recording what one channel of ``relaycast socketio`` gets."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import socketio


class SocketIOClient:
    """One python-socketio client subscribed to one channel; records (event, data, at)."""

    def __init__(self, url: str, channel: str, *, token: str | None = None) -> None:
        self.channel = channel
        self.events: list[tuple[str, Any, float]] = []
        self._lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)
        self.client.on("*", self._record)
        self.client.connect(url, transports=["websocket"], auth={"token": token} if token else None,
                            wait_timeout=10)
        self.ack = self.client.call("subscribe", {"channel": channel}, timeout=10)

    def _record(self, event: str, data: Any = None) -> None:
        with self._lock:
            self.events.append((event, data, time.monotonic()))

    def of(self, event: str) -> list[Any]:
        with self._lock:
            return [data for name, data, _ in self.events if name == event]

    def seqs(self) -> list[int]:
        return [line["seq"] for data in self.of("log") for line in data["events"]]

    def wait_for(self, condition: Callable[[], bool], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not met within {timeout_s}s; {len(self.events)} events, "
                                     f"last: {self.events[-3:]}")
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
