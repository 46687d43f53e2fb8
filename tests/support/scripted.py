"""Scripted answers for the fault-injecting servers: rules queued for N uses, first in first
out, then a default used for ever."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")


@dataclass
class _Queued(Generic[R]):
    rule: R
    remaining: int


class Script(Generic[R]):
    def __init__(self, default: R) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Queued[R]] = deque()
        self._default = default

    def add(self, rule: R, times: int | None) -> None:
        """Use ``rule`` for the next ``times`` answers; ``None``: it becomes the default."""
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            if times is None:
                self._default = rule
            else:
                self._queue.append(_Queued(rule, times))

    def reset(self, default: R) -> None:
        with self._lock:
            self._queue.clear()
            self._default = default

    def next(self) -> R:
        with self._lock:
            if not self._queue:
                return self._default
            entry = self._queue[0]
            entry.remaining -= 1
            if entry.remaining <= 0:
                self._queue.popleft()
            return entry.rule
