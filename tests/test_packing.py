"""Coalescing log lines under a provider's size limit."""

from __future__ import annotations

import json

from broadcasters.base import Message
from broadcasters.packing import LogBatch, fit, pack_events


def _events(n: int, text: str = "step done", start: int = 1) -> list[dict[str, object]]:
    return [{"seq": i, "ts": 1_700_000_000_000 + i, "level": "info", "message": f"{text} {i}",
             "data": {"i": i}} for i in range(start, start + n)]


def test_lines_are_coalesced_into_few_messages_under_the_limit_in_seq_order() -> None:
    messages = pack_events("private-logs-r1", "r1", _events(1000), 10_000)
    assert 3 <= len(messages) <= 10
    assert all(m.size_bytes <= 10_000 for m in messages)
    seqs = [e["seq"] for m in messages for e in json.loads(m.payload)["events"]]
    assert seqs == list(range(1, 1001))
    assert messages[0].id == f"r1:1-{messages[0].seqs[1]}"  # type: ignore[index]
    assert all(json.loads(m.payload)["run_id"] == "r1" for m in messages)


def test_a_line_over_the_limit_in_utf8_is_truncated_with_a_marker() -> None:
    line = {"seq": 7, "ts": 1, "level": "info", "message": "é" * 6000, "data": {"k": "v"}}
    assert len(json.dumps(line, ensure_ascii=False)) < 10_000 < len(
        json.dumps(line, ensure_ascii=False).encode())
    (message,) = pack_events("c", "r", [line], 10_000)
    assert message.size_bytes <= 10_000
    event = json.loads(message.payload)["events"][0]
    assert event["truncated"] is True
    assert event["seq"] == 7
    assert "truncated" in event["message"]
    assert event["message"].startswith("é" * 100)


def test_fit_repacks_an_oversized_log_message_for_a_smaller_provider() -> None:
    big = LogBatch("c", "r", _events(300)).pack(64_000)
    assert len(big) == 1
    small = fit(big[0], 2_000)
    assert len(small) > 1
    assert all(m.size_bytes <= 2_000 for m in small)
    seqs = [e["seq"] for m in small for e in json.loads(m.payload)["events"]]
    assert seqs == list(range(1, 301))


def test_fit_leaves_other_events_alone() -> None:
    message = Message.from_data("admin-events", "started", {"x": "y" * 500}, "a1")
    assert fit(message, 100) == [message]


def test_ids_are_stable_for_the_same_lines() -> None:
    first = [m.id for m in pack_events("c", "r", _events(500), 5_000)]
    again = [m.id for m in pack_events("c", "r", _events(500), 5_000)]
    assert first == again
