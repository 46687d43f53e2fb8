"""The emitter's buffer: lines and admin events waiting for the flusher.

Appending a line is the hot path: ``Emitter.emit`` puts one tuple onto a deque itself (no
call, no lock, no I/O). The buffer is bounded: past ``max_lines`` the oldest DEBUG lines
are dropped first, then the oldest of the others; every drop is counted in a
:class:`DropLedger`, and the flusher writes a WARNING line into each run saying how many it
lost (so the numbering has no gap and the loss is in the run's own history).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

#: (order, run_id, level, message, data, ts_ms): as the workflow gave it, not yet cleaned.
Entry = tuple[int, str, Any, Any, Any, int]
#: (order, event type, payload)
AdminEntry = tuple[int, str, dict[str, Any]]
#: (order, channel, event, data as JSON text): an application event, checked at the call.
AppEntry = tuple[int, str, str, str]


@dataclass
class DropLedger:
    """Lines dropped: in total (the emitter's stats), and per run in ``unreported`` until the
    writer stores each run's WARNING line."""

    total: int = 0
    unreported: dict[str, int] = field(default_factory=dict)

    def count(self, run_id: str, n: int = 1) -> None:
        self.total += n
        self.unreported[run_id] = self.unreported.get(run_id, 0) + n

    def take_unreported(self) -> dict[str, int]:
        taken, self.unreported = self.unreported, {}
        return taken

    def give_back(self, unreported: dict[str, int]) -> None:
        """Unreported drops whose WARNING line could not be stored: try again next flush."""
        for run_id, n in unreported.items():
            self.unreported[run_id] = self.unreported.get(run_id, 0) + n


def _shed(debug: deque[Entry], other: deque[Entry], count: int, ledger: DropLedger) -> None:
    """Drop ``count`` lines: the oldest DEBUG first, then the oldest of the rest."""
    for _ in range(count):
        source = debug if debug else other
        try:
            entry = source.popleft()
        except IndexError:
            return
        ledger.count(entry[1])


class LineBuffer:
    """Lines (DEBUG apart, so they can be shed first) and admin events, in emit order."""

    def __init__(self, max_lines: int, ledger: DropLedger | None = None) -> None:
        self.max_lines = max_lines
        self.ledger = ledger if ledger is not None else DropLedger()
        #: The emitter's hot path appends ``(next(order), run_id, level, message, data, ts)``
        #: to ``debug`` or ``other`` itself, then calls :meth:`over_bound` (see
        #: ``Emitter.emit``: a method call would cost a tenth of an emit).
        self.order = itertools.count(1)
        self.debug: deque[Entry] = deque()
        self.other: deque[Entry] = deque()
        self._admin: deque[AdminEntry] = deque()
        self._app: deque[AppEntry] = deque()

    def next_order(self) -> int:
        """A number after every line and event appended so far."""
        return next(self.order)

    def over_bound(self, waiting: int) -> None:
        """Shed what is over the bound: the oldest DEBUG lines first."""
        _shed(self.debug, self.other, waiting - self.max_lines, self.ledger)

    def append_admin(self, event_type: str, payload: dict[str, Any]) -> None:
        self._admin.append((next(self.order), event_type, payload))

    def append_app(self, channel: str, event: str, payload: str) -> None:
        self._app.append((next(self.order), channel, event, payload))

    def waiting(self) -> int:
        return len(self.debug) + len(self.other)

    def oldest_order(self) -> int | None:
        heads = [q[0][0] for q in (self.debug, self.other) if q]
        return min(heads) if heads else None

    def drain(self, limit: int) -> list[Entry]:
        """At most ``limit`` lines, oldest first (emit order)."""
        debug, other = self.debug, self.other
        out: list[Entry] = []
        while len(out) < limit:
            if debug and (not other or debug[0][0] < other[0][0]):
                out.append(debug.popleft())
            elif other:
                out.append(other.popleft())
            else:
                break
        return out

    def drain_admin(self) -> list[AdminEntry]:
        return [self._admin.popleft() for _ in range(len(self._admin))]

    def drain_app(self) -> list[AppEntry]:
        return [self._app.popleft() for _ in range(len(self._app))]

    def bound(self, entries: list[Entry]) -> list[Entry]:
        """Lines taken out but not yet stored (SQL down) obey the same bound."""
        over = len(entries) - self.max_lines
        if over <= 0:
            return entries
        debug = deque(e for e in entries if e[2] == "debug")
        other = deque(e for e in entries if e[2] != "debug")
        _shed(debug, other, over, self.ledger)
        return list(heapq.merge(debug, other))

    def clear(self) -> None:
        """Forget every line and event (a forked child does not own its parent's)."""
        self.debug.clear()
        self.other.clear()
        self._admin.clear()
        self._app.clear()
        self.ledger.unreported.clear()
