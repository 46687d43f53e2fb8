"""Broadcasters: provider adapters, one error taxonomy, the manager and its shared state."""

from broadcasters.base import Broadcaster, Message, SendResult
from broadcasters.errors import (
    AuthFailed,
    BadRequest,
    BroadcastError,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    TransientError,
)
from broadcasters.manager import BroadcasterManager, SendReport
from broadcasters.packing import LogBatch

__all__ = [
    "AuthFailed",
    "BadRequest",
    "BroadcastError",
    "Broadcaster",
    "BroadcasterManager",
    "LogBatch",
    "Message",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "SendReport",
    "SendResult",
    "TransientError",
]
