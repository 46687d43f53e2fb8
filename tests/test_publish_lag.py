"""The emit-to-publish histogram of a broadcast task: each delivered line once, in its bucket."""

from __future__ import annotations

from broadcasters import keys
from broadcasters.base import Message
from broadcasters.wire import LineEvent, RunLines, message_id
from tasks.publish_lag import publish_lag_counts


def _run(run_id: str, stamps: list[tuple[int, int]]) -> RunLines:
    events: list[LineEvent] = [{"seq": seq, "ts": ts, "level": "info", "message": "m",
                                "data": {}} for seq, ts in stamps]
    return {"run_id": run_id, "channel": f"private-logs-{run_id}", "events": events}


def _message(run_id: str, first: int, last: int) -> Message:
    return Message(f"private-logs-{run_id}", "log", "{}", message_id(run_id, first, last),
                   seqs=(first, last))


def test_each_delivered_line_counts_once_in_the_bucket_of_its_lag() -> None:
    now = 100_000
    runs = [_run("a", [(1, now - 5), (2, now - 30), (3, now - 30), (4, now - 700)]),
            _run("b", [(7, now - 120_000), (8, now - 10)])]
    # a's 1-2 and 2-3 overlap (two broadcasters, or a repeat): line 2 counts once; a's 4
    # and b's 8 were not delivered; b's 7 is past the last bound (the open bucket).
    delivered = [_message("a", 1, 2), _message("a", 2, 3), _message("b", 7, 7)]
    counts = publish_lag_counts(runs, delivered, now)
    assert counts == {keys.publish_lag_le(10): 1, keys.publish_lag_le(50): 2,
                      keys.publish_lag_le(600_000): 1,
                      keys.PUBLISH_LAG_SUM_MS: 5 + 30 + 30 + 120_000}


def test_nothing_delivered_counts_nothing() -> None:
    assert publish_lag_counts([_run("a", [(1, 0)])], [], 1000) == {}
    admin = Message("private-admin-events", "started", "{}", "admin:x")
    assert publish_lag_counts([_run("a", [(1, 0)])], [admin], 1000) == {}
