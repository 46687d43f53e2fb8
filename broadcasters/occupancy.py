"""Occupancy: which runs' log channels someone is watching, shared by every worker.

Pusher (and soketi) tell the server when a channel gains its first subscriber and loses its
last (``channel_occupied`` / ``channel_vacated`` webhooks, signed with the app secret) and
answer which channels are occupied (``GET /apps/{id}/channels?filter_by_prefix=``). With
``RELAYCAST_OCCUPANCY=webhooks`` the broadcast path skips a run's lines while nobody
watches its channel: they stay in SQL (state ``skipped``), and a late watcher's client
loads them from the history. Admin channels are always published.

* ``relaycast api`` records each webhook (``POST /pusher/webhook``) with :meth:`record`;
  the newest event per channel wins (webhooks can arrive out of order: each carries the
  provider's ``time_ms``).
* Beat's reconciliation (:meth:`reconcile`, every ``RELAYCAST_OCCUPANCY_RECONCILE_S``)
  replaces what webhooks said with what the provider's API says — webhooks can be lost
  (soketi never retries one; the API may have been down) — keeping any webhook newer than
  the question it asked.
* :meth:`watched` is what a broadcast asks, once per turn of a batch (one round trip). It answers
  None — *unknown*, so publish everything — until a reconciliation succeeded, once the
  last one is older than three intervals (reconciling keeps failing), and whenever Redis
  is unreachable. Unknown occupancy never costs a line.

Occupancy is a part of the shared state it is handed (:class:`~broadcasters.state.SharedState`,
built by the caller from the settings): one hash, :data:`~broadcasters.keys.OCCUPANCY`, over
the state's backend; reads fail open through the state (:meth:`SharedState.fail_open`), so an
unreachable Redis is counted and logged once, with the state's other failures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from broadcasters import keys
from broadcasters.state import SharedState

if TYPE_CHECKING:
    from config import Settings

logger = logging.getLogger(__name__)

OCCUPANCY_KEY = keys.OCCUPANCY
RECONCILED_FIELD = keys.OCCUPANCY_RECONCILED
OCCUPANCY_TTL_S = 86_400
#: Reconciliations that may fail in a row before occupancy counts as unknown.
STALE_AFTER_INTERVALS = 3


def _entry(time_ms: int, occupied: bool) -> str:
    return f"{time_ms}:{1 if occupied else 0}"


def _parse(value: str | None) -> tuple[int, bool] | None:
    if not value:
        return None
    stamp, _, flag = value.partition(":")
    try:
        return int(stamp), flag == "1"
    except ValueError:
        return None


class Occupancy:
    @classmethod
    def for_settings(cls, settings: Settings, state: SharedState) -> Occupancy | None:
        """Occupancy as configured; None when gating is off (``RELAYCAST_OCCUPANCY=off``)."""
        if settings.occupancy == "off":
            return None
        return cls(state, reconcile_s=settings.occupancy_reconcile_s)

    def __init__(self, state: SharedState, *, reconcile_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.reconcile_s = reconcile_s
        self.clock = clock

    @property
    def known_for_s(self) -> float:
        """How long a reconciliation keeps occupancy known."""
        return STALE_AFTER_INTERVALS * self.reconcile_s

    # Writing -------------------------------------------------------------------------------

    def record(self, changes: Iterable[tuple[str, bool]], time_ms: int) -> list[str]:
        """Apply webhook events (channel, occupied) stamped ``time_ms``; return the channels
        whose state this changed (an event older than what is stored changes nothing).
        Raises :class:`~broadcasters.backends.StateUnavailable` (the provider should send it
        again)."""
        changes = list(changes)
        if not changes:
            return []
        backend = self.state.backend
        current = backend.get_fields(OCCUPANCY_KEY, [channel for channel, _ in changes])
        updates = {}
        for (channel, occupied), value in zip(changes, current, strict=True):
            stored = _parse(value)
            if stored is None or stored[0] <= time_ms:
                updates[channel] = _entry(time_ms, occupied)
        backend.set_fields(OCCUPANCY_KEY, updates, OCCUPANCY_TTL_S)
        return list(updates)

    def reconcile(self, occupied: Iterable[str], asked_at_ms: int) -> None:
        """What the provider's API said at ``asked_at_ms`` replaces what webhooks said before
        it; anything recorded after the question is kept. Raises
        :class:`~broadcasters.backends.StateUnavailable`."""
        backend = self.state.backend
        [current] = backend.hashes([OCCUPANCY_KEY])
        merged = {channel: _entry(asked_at_ms, True) for channel in occupied}
        for channel, value in current.items():
            stored = _parse(value)
            if channel != RECONCILED_FIELD and stored is not None and stored[0] > asked_at_ms:
                merged[channel] = value
        merged[RECONCILED_FIELD] = repr(self.clock())
        backend.replace_fields(OCCUPANCY_KEY, merged, OCCUPANCY_TTL_S)

    # Reading -------------------------------------------------------------------------------

    def _fresh(self, reconciled_at: str | None) -> bool:
        """Did a reconciliation succeed recently enough for occupancy to count as known?"""
        return reconciled_at is not None and self.clock() - float(reconciled_at) <= self.known_for_s

    def known(self) -> bool:
        backend = self.state.backend
        unknown: list[str | None] = [None]
        [raw] = self.state.fail_open(
            "read occupancy", lambda: backend.get_fields(OCCUPANCY_KEY, [RECONCILED_FIELD]), unknown)
        return self._fresh(raw)

    def watched(self, channels: Sequence[str]) -> dict[str, bool] | None:
        """Whether someone watches each channel; None when that is not known (publish)."""
        if not channels:
            return {}
        backend = self.state.backend
        stored: list[str | None] | None = self.state.fail_open(
            "read occupancy",
            lambda: backend.get_fields(OCCUPANCY_KEY, [RECONCILED_FIELD, *channels]), None)
        if stored is None:
            return None
        raw, *values = stored
        if not self._fresh(raw):
            return None
        out = {}
        for channel, value in zip(channels, values, strict=True):
            entry = _parse(value)
            out[channel] = entry is not None and entry[1]
        return out

    def occupied_channels(self) -> list[str]:
        backend = self.state.backend
        nothing: list[dict[str, str]] = [{}]
        [table] = self.state.fail_open("read occupancy", lambda: backend.hashes([OCCUPANCY_KEY]),
                                       nothing)
        return sorted(c for c, v in table.items()
                      if c != RECONCILED_FIELD and (entry := _parse(v)) is not None and entry[1])
