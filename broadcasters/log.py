"""The ``log`` broadcaster: JSON lines through :mod:`logging`.

The embedded default and the last resort: it never fails for a provider reason, so with
the default order (every configured provider, then ``log``) a line always goes somewhere
an operator can read. It is not *live*: no browser receives what it writes, so while a live
provider is configured the manager keeps such lines owed to it (see
:mod:`broadcasters.manager`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from broadcasters.base import Broadcaster, Message

logger = logging.getLogger("relaycast.broadcast")


class LogBroadcaster(Broadcaster):
    name = "log"
    #: Operators read it; browsers do not: lines it takes are still owed to a live broadcaster.
    live = False
    max_message_bytes = 1 << 20
    max_batch = 100

    def __init__(self, log: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self._log = log or logger
        self._level = level

    def _publish(self, messages: Sequence[Message]) -> None:
        if not self._log.isEnabledFor(self._level):
            return
        for message in messages:
            self._log.log(
                self._level,
                '{"broadcaster":"log","channel":"%s","event":"%s","id":"%s","data":%s}',
                message.channel, message.event, message.id, message.payload,
            )
