"""The design relaycast is measured against: one Celery task per log line.

The workflow calls ``publish_line.delay(channel, data)`` for every line; the task makes one
``pusher.Pusher.trigger(channel, "log", data)`` call. No batching, no SQL, no retries: the
naive way to stream logs through Pusher from Celery.

The Pusher client is built once per worker process (after the fork) and reused, so the
baseline keeps its HTTP connection alive: a fairer (faster) baseline than building a
client per call.

Loaded into a worker with ``celery -A relaycast worker -Q baseline -I benchmarks.baseline``.
"""

from __future__ import annotations

import os
from typing import Any

from broadcasters.pusher import pusher_client as build_pusher_client
from config import load_settings
from tasks.celery_app import app

BASELINE_QUEUE = "baseline"
TASK_NAME = "benchmarks.baseline.publish_line"

_client: Any = None
_client_pid: int | None = None


def pusher_client() -> Any:
    """This process's ``pusher.Pusher``, from the same PUSHER_* settings relaycast reads."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        settings = load_settings()
        assert settings.pusher_secret is not None, "PUSHER_* must be set"
        _client, _client_pid = build_pusher_client(settings), os.getpid()
    return _client


@app.task(name=TASK_NAME, queue=BASELINE_QUEUE, ignore_result=True)  # type: ignore[untyped-decorator]
def publish_line(channel: str, data: dict[str, Any]) -> None:
    """Send one line as one Pusher event (one HTTP request)."""
    pusher_client().trigger(channel, "log", data)
