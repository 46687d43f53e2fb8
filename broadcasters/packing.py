"""Coalescing log lines into as few provider messages as a size limit allows.

Wire format of a log message (event ``log``)::

    {"run_id": R, "events": [{"seq": int, "ts": epoch_ms, "level": str,
                              "message": str, "data": {...}}, ...]}

Lines are encoded once each; messages are assembled from the encoded pieces, so packing
costs one ``json.dumps`` per line whatever the limit. A single line too large for the
limit is truncated with a marker (``truncated: true`` and the number of bytes cut); the
full line stays in SQL, where ``relaycast logs`` and the history endpoint read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broadcasters.base import Message, encode_json, without_lone_surrogates
from broadcasters.wire import LOG_EVENT, message_id

#: Events a provider request carries at most: Pusher's ``trigger_batch`` limit, which the
#: emitter's periodic sends fill (``workflows.outbox``) and ``PusherBroadcaster`` keeps to.
REQUEST_EVENTS = 10
#: A run's piece of at most this many lines counts, for filling requests, as one event
#: (short lines; a longer piece may be packed into several and is never held back).
SMALL_PIECE_LINES = 20

TRUNCATION_MARK = " … [truncated {cut} bytes; the full line is in the history]"


@dataclass(frozen=True)
class LogBatch:
    """Lines of one run, in seq order, to be packed for whichever provider sends them."""

    channel: str
    run_id: str
    events: Sequence[Mapping[str, Any]]

    def pack(self, max_bytes: int) -> list[Message]:
        return pack_events(self.channel, self.run_id, self.events, max_bytes)


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def truncate_event(event: Mapping[str, Any], budget_bytes: int) -> str:
    """Encode ``event`` within ``budget_bytes`` by shortening its message and dropping its data."""
    message = without_lone_surrogates(str(event.get("message", "")))
    original = _utf8_len(encode_json(event))
    raw = message.encode("utf-8")
    keep = len(raw)
    while True:
        kept = raw[:keep].decode("utf-8", errors="ignore")
        cut = original - _utf8_len(kept)
        shortened = {
            **{k: v for k, v in event.items() if k not in ("message", "data")},
            "message": kept + TRUNCATION_MARK.format(cut=max(cut, 0)),
            "data": {},
            "truncated": True,
        }
        encoded = encode_json(shortened)
        over = _utf8_len(encoded) - budget_bytes
        if over <= 0:
            return encoded
        if keep == 0:
            raise ValueError(f"a log line cannot be made to fit in {budget_bytes} bytes")
        keep = max(0, keep - max(over, 16))


def pack_events(
    channel: str, run_id: str, events: Sequence[Mapping[str, Any]], max_bytes: int
) -> list[Message]:
    """Greedy packing of ``events`` (in seq order) into messages of at most ``max_bytes``."""
    head = '{"run_id":' + encode_json(run_id) + ',"events":['
    tail = "]}"
    overhead = _utf8_len(head) + _utf8_len(tail)
    budget = max_bytes - overhead
    messages: list[Message] = []
    parts: list[str] = []
    size = 0
    first = last = 0

    def flush() -> None:
        payload = head + ",".join(parts) + tail
        messages.append(Message(channel, LOG_EVENT, payload, message_id(run_id, first, last),
                                seqs=(first, last)))

    for event in events:
        encoded = encode_json(event)
        length = _utf8_len(encoded)
        if length > budget:
            encoded = truncate_event(event, budget)
            length = _utf8_len(encoded)
        seq = int(event["seq"])
        if parts and size + 1 + length > budget:
            flush()
            parts, size = [], 0
        if not parts:
            first = seq
            size = length
        else:
            size += 1 + length
        parts.append(encoded)
        last = seq
    if parts:
        flush()
    return messages


def fit(item: Message | LogBatch, max_bytes: int) -> list[Message]:
    """``item`` as messages of at most ``max_bytes``; a too-large non-log message is left as is
    (the broadcaster then reports it as too large)."""
    if isinstance(item, LogBatch):
        return item.pack(max_bytes)
    if item.size_bytes <= max_bytes or item.event != LOG_EVENT:
        return [item]
    data = json.loads(item.payload)
    repacked = pack_events(item.channel, str(data["run_id"]), data["events"], max_bytes)
    if item.socket_id:
        repacked = [Message(m.channel, m.event, m.payload, m.id, item.socket_id, m.seqs)
                    for m in repacked]
    return repacked
