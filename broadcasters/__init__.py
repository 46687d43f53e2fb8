"""Broadcasters: provider adapters, one error taxonomy, the manager and its shared state."""

from broadcasters.base import Attempt, Broadcaster, Message
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
from broadcasters.wire import Batch, Channels

__all__ = [
    "Attempt",
    "AuthFailed",
    "BadRequest",
    "Batch",
    "BroadcastError",
    "Broadcaster",
    "BroadcasterManager",
    "Channels",
    "LogBatch",
    "Message",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "SendReport",
    "TransientError",
]
