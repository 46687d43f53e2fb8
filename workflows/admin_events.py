"""Admin events on ``{RELAYCAST_CHANNEL_PREFIX}admin-events``: run started / finished / failed
and anything else operators should see live.

    from workflows import admin_events
    admin_events.emit("deploy", version="1.4.2")

Like log lines, ``emit`` returns at once and never raises; the event goes out with the
next flush's broadcast task (event name = ``type``; data carries ``type``, ``ts`` and the
keyword arguments).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from workflows.process import get_emitter

logger = logging.getLogger(__name__)
_TYPE = re.compile(r"^[A-Za-z0-9_\-.:]{1,100}$")


def emit(type: str, **data: Any) -> None:  # noqa: A002 - the contract's name
    try:
        if not _TYPE.match(type):
            logger.warning("admin event type %r refused: use 1-100 letters, digits, _ - . :", type)
            return
        get_emitter().emit_admin(type, data)
    except Exception:
        logger.exception("admin event %s dropped", type)
