"""The health report's pipeline section reads every counter the pipeline writes, by the names
in :mod:`broadcasters.keys`."""

from __future__ import annotations

from broadcasters.backends import MemoryBackend
from broadcasters.keys import UNWATCHED, UNWATCHED_LINES, UNWATCHED_MESSAGES, PipelineCounter
from broadcasters.state import SharedState
from config import load_settings
from tasks.reporting import INTERVAL_COUNTERS, gather_pipeline


def test_every_pipeline_counter_written_is_read_back_by_the_report(sqlite_url: str) -> None:
    state = SharedState(MemoryBackend())
    # A different count for each, so that a report reading one counter for another shows.
    written: dict[str, int] = {counter: 10 + i for i, counter in enumerate(PipelineCounter)}
    state.count_pipeline(written)
    settings = load_settings(DATABASE_URL=sqlite_url, RELAYCAST_HEALTH_INTERVAL_S=60)

    pipeline = gather_pipeline(settings, state).model_dump()

    assert {counter: pipeline.get(f"{counter}_last_hour") for counter in PipelineCounter} == written
    assert {counter: pipeline.get(f"{counter}_interval") for counter in INTERVAL_COUNTERS} == {
        counter: written[counter] for counter in INTERVAL_COUNTERS}


def test_the_unwatched_daily_counters_are_read_back_by_the_report(sqlite_url: str) -> None:
    state = SharedState(MemoryBackend())
    state.count_today(UNWATCHED, {UNWATCHED_LINES: 7, UNWATCHED_MESSAGES: 3})
    # Occupancy as gating with webhooks (which needs Pusher and Redis to be configured).
    settings = load_settings(DATABASE_URL=sqlite_url).model_copy(update={"occupancy": "webhooks"})

    pipeline = gather_pipeline(settings, state)

    assert (pipeline.unwatched_lines_today, pipeline.unwatched_messages_today) == (7, 3)
