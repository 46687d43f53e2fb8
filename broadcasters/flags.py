"""Flags: why a broadcaster is off for every worker (disabled, or paused after a rate limit).

Stored as JSON under ``disabled:{name}`` / ``paused:{name}`` (:mod:`broadcasters.keys`) by
:class:`~broadcasters.state.SharedState`; this module is the value and its vocabulary.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from enum import StrEnum

#: A flag with no natural end ("credentials rejected", an operator's "until re-enabled")
#: still expires after a week, so the state heals by itself.
OPEN_ENDED_FLAG_TTL_S = 7 * 86400


class BroadcasterState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    PAUSED = "paused"


class FlagCause(StrEnum):
    """Who or what switched a broadcaster off."""

    OPERATOR = "operator"
    QUOTA = "quota"
    AUTH = "auth"
    RATE_LIMIT = "rate-limit"


@dataclass(frozen=True)
class Flag:
    """Why a broadcaster is off: ``until`` (epoch seconds) is None for "until re-enabled"."""

    reason: str
    since: float
    until: float | None
    set_by: str
    kind: BroadcasterState = BroadcasterState.DISABLED
    cause: FlagCause = FlagCause.OPERATOR

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> Flag | None:
        try:
            data = json.loads(raw)
            data["kind"] = BroadcasterState(data.get("kind", BroadcasterState.DISABLED))
            data["cause"] = FlagCause(data.get("cause", FlagCause.OPERATOR))
            return cls(**data)
        except (ValueError, TypeError):
            return None

    def active(self, now: float) -> bool:
        """Still in force at ``now``?"""
        return self.until is None or self.until > now


def worker_identity() -> str:
    """Who set a flag: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"
