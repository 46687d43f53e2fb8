"""Admin events on ``{RELAYCAST_CHANNEL_PREFIX}admin-events``: run started / finished / failed
and anything else operators should see live.

    from workflows import admin_events
    admin_events.emit("deploy", version="1.4.2")

Like log lines, ``emit`` returns at once and never raises; the event goes out with the
next flush's broadcast task (event name = ``type``; data carries ``type``, ``ts`` and the
keyword arguments).

A run's own events are published in the run's order with its lines, by any number of
broadcast workers: ``started`` (with ``run_id``) before the run's first line, and an end —
any event with ``run_id`` and ``last_seq``, the seq of the run's last line when it ended, as
:func:`workflows.base.end_run` sends ``finished`` and ``failed`` — after that line (a bounded
wait, like lines: :mod:`broadcasters.ordering`). Every other event goes out with its batch.
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
