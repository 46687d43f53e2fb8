"""The occupancy reconciliation (celery beat, every ``RELAYCAST_OCCUPANCY_RECONCILE_S``, when
``RELAYCAST_OCCUPANCY=webhooks``): the provider's own answer to "which log channels are
occupied?" replaces what webhooks said, so that a lost webhook costs at most one interval.
See :mod:`broadcasters.occupancy`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from broadcasters.pusher import pusher_client
from broadcasters.wire import OCCUPANCY_TASK, Channels
from tasks import runtime
from tasks.celery_app import app

logger = logging.getLogger(__name__)

TASK_NAME = OCCUPANCY_TASK


@app.task(name=TASK_NAME)
def reconcile_occupancy() -> dict[str, Any]:
    settings = runtime.settings()
    occupancy = runtime.occupancy()
    if occupancy is None:
        return {"occupancy": "off"}
    asked_at_ms = int(time.time() * 1000)
    client = pusher_client(settings)
    try:
        answer = client.channels_info(prefix_filter=Channels(settings.channel_prefix).logs_prefix)
    except Exception as exc:  # noqa: BLE001 - it fails open after a few intervals: say why
        logger.warning("occupancy not reconciled: the provider's channels API failed (%s: %s); "
                       "broadcasts publish everything once this lasts %.0fs",
                       type(exc).__name__, exc, occupancy.known_for_s)
        return {"reconciled": False, "error": type(exc).__name__}
    occupied = sorted(answer.get("channels", {}))
    occupancy.reconcile(occupied, asked_at_ms)
    return {"reconciled": True, "occupied": len(occupied)}
