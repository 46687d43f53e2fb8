"""A test double of a broadcaster: in memory, records what it got, can be scripted to fail.

For unit-testing the manager's policy; never selectable by name in production (tests build
it directly). It is never a stand-in for the real-server tests: the Pusher adapter is
tested against soketi and a faulting HTTP server.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from broadcasters.base import Broadcaster, Message
from broadcasters.errors import BroadcastError


class StubBroadcaster(Broadcaster):
    def __init__(self, name: str = "stub", *, max_message_bytes: int = 10_000,
                 max_batch: int = 10, live: bool = True) -> None:
        self.name = name
        self.live = live
        self.max_message_bytes = max_message_bytes
        self.max_batch = max_batch
        self.sent: list[Message] = []
        self.requests = 0
        self._script: deque[BroadcastError | None] = deque()
        self._default: BroadcastError | None = None
        self._lock = threading.Lock()

    def fail_next(self, *errors: BroadcastError | None) -> None:
        """The next requests fail with these errors in turn (``None`` succeeds)."""
        with self._lock:
            self._script.extend(errors)

    def fail_always(self, error: BroadcastError | None) -> None:
        """Every request after the scripted ones fails with ``error`` (``None``: succeeds)."""
        with self._lock:
            self._default = error

    def _publish(self, messages: Sequence[Message]) -> None:
        with self._lock:
            self.requests += 1
            error = self._script.popleft() if self._script else self._default
            if error is None:
                self.sent.extend(messages)
        if error is not None:
            raise error
