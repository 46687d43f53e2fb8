"""The Pusher adapter, through the manager, against a real soketi and a WebSocket subscriber."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from support.pusher_ws import Subscriber, sign_channel
from support.servers import Soketi

from broadcasters.backends import MemoryBackend
from broadcasters.base import Message
from broadcasters.factory import build_manager
from broadcasters.packing import LogBatch
from broadcasters.pusher import PusherBroadcaster
from broadcasters.state import SharedState
from config import Settings, load_settings

SubscriberFactory = Callable[..., Subscriber]


def _settings(server: Soketi, **extra: str) -> Settings:
    return load_settings(**server.env(), RELAYCAST_BROADCASTERS="pusher", **extra)


def _lines(n: int, text: str = "working", start: int = 1) -> list[dict[str, object]]:
    return [{"seq": i, "ts": int(time.time() * 1000), "level": "info", "message": f"{text} {i}",
             "data": {"step": i}} for i in range(start, start + n)]


def _received_seqs(events: list[dict[str, object]]) -> list[int]:
    return [line["seq"] for e in events if e["event"] == "log"
            for line in e["data"]["events"]]  # type: ignore[index]


def test_a_message_reaches_a_signed_subscriber_of_a_private_channel(
    soketi: Soketi, subscriber_factory: SubscriberFactory
) -> None:
    channel = "private-logs-run-42"
    subscriber = subscriber_factory()
    subscriber.subscribe(channel, auth=sign_channel(soketi.key, soketi.secret,
                                                    subscriber.socket_id, channel))
    manager = build_manager(_settings(soketi), SharedState(MemoryBackend()))
    report = manager.send([LogBatch(channel, "run-42", _lines(2000))])
    assert report.pending == [] and report.failed == []
    assert len(report.delivered) > 10, "2,000 lines need several messages and requests"
    events = subscriber.wait_for(lambda evs: len(_received_seqs(
        [e for e in evs if e["channel"] == channel])) >= 2000)
    assert _received_seqs([e for e in events if e["channel"] == channel]) == list(range(1, 2001))


def test_utf8_over_10kb_is_split_or_truncated_so_soketi_never_answers_413(
    soketi: Soketi, subscriber_factory: SubscriberFactory
) -> None:
    channel = "private-logs-utf8"
    subscriber = subscriber_factory()
    subscriber.subscribe(channel)
    text = "ünïcødé ✓ " * 900  # 9,000 characters, about 14 KB in UTF-8
    assert len(text) < 10_000 < len(text.encode())
    lines = [*_lines(5), {"seq": 6, "ts": 1, "level": "warning", "message": text, "data": {}},
             *_lines(5, start=7)]
    manager = build_manager(_settings(soketi), SharedState(MemoryBackend()))
    report = manager.send([LogBatch(channel, "utf8", lines)])
    assert report.failed == [] and report.pending == []
    assert manager.state.counts("pusher").failed == {}
    events = subscriber.wait_for(lambda evs: len(_received_seqs(evs)) >= 11)
    received = [line for e in events if e["event"] == "log" for line in e["data"]["events"]]
    assert [line["seq"] for line in received] == list(range(1, 12))
    big = received[5]
    assert big["truncated"] is True and big["message"].startswith(text[:200])


def test_the_library_alone_would_have_been_refused(soketi: Soketi) -> None:
    """Control for the test above: without relaycast's byte check soketi answers 413."""
    broadcaster = PusherBroadcaster.from_settings(_settings(soketi, RELAYCAST_PUSHER_MAX_EVENT_BYTES="10240"))
    broadcaster.max_message_bytes = 1 << 20  # switch the byte check off
    payload = json.dumps({"message": "ünïcødé ✓ " * 900}, ensure_ascii=False)
    result = broadcaster.send([Message("private-logs-x", "log", payload, "x:1-1")])
    assert [e.category for _, e in result.failed] == ["too_large"]
    assert result.failed[0][1].status == 413
