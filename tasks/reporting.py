"""Building the health report from what the pipeline looks like now.

Used by the periodic health task, by ``relaycast status`` and by the API. This module
does not build the Celery app: the broadcast queue's depth is read over a plain kombu
connection to the broker, so a status call never depends on importing the workers' app.
"""

from __future__ import annotations

import time

from kombu import Connection
from kombu.exceptions import ChannelError

from broadcasters.keys import UNWATCHED, UNWATCHED_LINES, UNWATCHED_MESSAGES, PipelineCounter
from broadcasters.occupancy import Occupancy
from broadcasters.state import SharedState
from broadcasters.status import (
    HealthReport,
    PipelineHealth,
    build_report,
    load_latest,
    window_minutes,
)
from broadcasters.wire import BROADCAST_QUEUE
from config import Settings
from workflows.store import store_for


def queue_depth(broker_url: str, queue: str = BROADCAST_QUEUE) -> int:
    """Messages waiting in ``queue`` (raises if the broker cannot be reached in ~2 s)."""
    with Connection(broker_url, connect_timeout=2,
                    transport_options={"socket_timeout": 2, "socket_connect_timeout": 2,
                                       "max_retries": 1}) as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
        try:
            _, count, _ = connection.default_channel.queue_declare(queue=queue, passive=True)
        except ChannelError:  # an empty Redis queue has no key at all
            return 0
        return int(count)


#: Pipeline counters whose count over the health interval is reported too (as
#: ``{counter}_interval``): each one is a problem when it is not zero.
INTERVAL_COUNTERS = (PipelineCounter.LINES_DROPPED, PipelineCounter.DEAD_LETTERED,
                     PipelineCounter.APP_EVENTS_DEAD_LETTERED)


def gather_pipeline(settings: Settings, state: SharedState) -> PipelineHealth:
    """The pipeline's counters (every :class:`~broadcasters.keys.PipelineCounter` as
    ``{counter}_last_hour``), occupancy, queue depth and backlog."""
    minutes = window_minutes(settings.health_interval_s)
    recent = state.pipeline_counts(minutes)
    hour = state.pipeline_counts(60)
    counts: dict[str, int] = {f"{counter}_last_hour": hour.get(counter, 0)
                              for counter in PipelineCounter}
    counts.update({f"{counter}_interval": recent.get(counter, 0) for counter in INTERVAL_COUNTERS})
    pipeline = PipelineHealth.model_validate(counts)
    occupancy = Occupancy.for_settings(settings, state)
    if occupancy is not None:
        pipeline.occupancy = "known" if occupancy.known() else "unknown"
        pipeline.watched_channels = len(occupancy.occupied_channels())
        unwatched = state.today(UNWATCHED)
        pipeline.unwatched_lines_today = unwatched.get(UNWATCHED_LINES, 0)
        pipeline.unwatched_messages_today = unwatched.get(UNWATCHED_MESSAGES, 0)
    if settings.broker_url and not settings.broker_url.startswith("memory://"):
        try:
            pipeline.broadcast_queue_depth = queue_depth(settings.broker_url)
        except Exception as exc:  # noqa: BLE001 - a report must come out even then
            pipeline.errors.append(f"broker unreachable: {type(exc).__name__}")
    try:
        oldest = store_for(settings.database_url_or_default).oldest_pending_ts()
        if oldest is not None:
            pipeline.oldest_unbroadcast_age_s = round(max(0.0, time.time() - oldest / 1000), 3)
    except Exception as exc:  # noqa: BLE001
        pipeline.errors.append(f"database unreachable: {type(exc).__name__}")
    return pipeline


def compute_report(settings: Settings, state: SharedState) -> HealthReport:
    return build_report(settings, state, gather_pipeline(settings, state),
                        active_broadcaster=state.active())


def current_report(settings: Settings, state: SharedState) -> HealthReport:
    """The report as of now, for people and scripts (``relaycast status``, the API).

    Computed live, so that a provider failing this minute shows at once rather than at the
    next scheduled report; marked stale when Redis is configured and beat's latest report
    has expired (beat, or every worker, is down).
    """
    report = compute_report(settings, state)
    report.stale = settings.redis_url is not None and load_latest(state) is None
    return report
