"""The broadcast task's helpers: a retry carries exactly the lines it was given."""

from __future__ import annotations

from typing import Any

from broadcasters.base import Message
from broadcasters.packing import pack_events


def test_a_retry_of_lines_with_holes_never_packs_across_a_hole() -> None:
    from tasks.broadcast import batch_of, line_ranges

    events: list[dict[str, Any]] = [
        {"seq": s, "ts": 0, "level": "info", "message": f"m{s}", "data": {}} for s in (1, 2, 3, 7, 8)]
    messages: list[Message] = [*pack_events("private-logs-a", "a", events[:3], 10_000),
                               *pack_events("private-logs-a", "a", events[3:], 10_000)]
    retry = batch_of(messages, live_only=False)
    assert [[e["seq"] for e in run["events"]] for run in retry["runs"]] == [[1, 2, 3], [7, 8]]
    repacked = [m for run in retry["runs"]
                for m in pack_events(run["channel"], run["run_id"], run["events"], 10_000)]
    assert [m.id for m in repacked] == ["a:1-3", "a:7-8"]
    assert line_ranges(repacked) == [("a", 1, 3), ("a", 7, 8)], "SQL marks only lines carried"
