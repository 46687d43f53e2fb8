"""Property: whatever text and data workflow code hands the emitter, every line is stored,
every line is broadcast (or counted), and the history endpoint answers it — never a 500.

Hypothesis generates the lines (lone surrogates, NUL, huge text, nesting, non-string keys,
NaN, objects, unknown levels); they go through the real path: the emitter (cleaning,
numbering, SQL on SQLite and PostgreSQL), the broadcast task run in this process
(``Task.apply``: the ordering gate, the manager, packing under Pusher's size limit, the
bookkeeping in SQL) with the real Pusher adapter publishing to a local HTTP server that
records what it got (``support.fault_server``), and the history endpoint of ``relaycast
api`` (a subprocess).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.api import ApiServer
from support.emitting import Recorder
from support.fault_server import FaultServer

from workflows.cleaning import clean_text
from workflows.emitter import Emitter
from workflows.models import LineState
from workflows.store import LogStore

#: Characters that broke or could break a line: NUL, lone surrogates (what os.fsdecode makes
#: of a non-UTF-8 byte, and unpaired halves), astral-plane text, markup.
_SPECIAL = ["\x00", "\udcff", "\udc80", "\ud800", "\udfff", "é", "🚀", "<script>", "\\u0000"]
_TEXT = st.lists(st.characters() | st.sampled_from(_SPECIAL), max_size=40).map("".join)
_HUGE = st.builds(lambda s, n: (s or "x") * n, _TEXT, st.integers(500, 3000))


class _Thing:
    def __str__(self) -> str:
        return "a thing"


class _Broken:
    def __str__(self) -> str:
        raise RuntimeError("no text")


_LEAF = (st.none() | st.booleans() | st.integers() | st.floats() | _TEXT
         | st.just(math.nan) | st.just(-math.inf) | st.binary(max_size=10)
         | st.just(_Thing()) | st.just(_Broken()))
_KEY = _TEXT | st.integers() | st.none() | st.booleans() | st.tuples(st.integers(), _TEXT)
_DATA = st.recursive(_LEAF, lambda children: (
    st.lists(children, max_size=4) | st.dictionaries(_KEY, children, max_size=4)
    | st.frozensets(st.integers(), max_size=3)), max_leaves=12)
_LEVEL = (st.sampled_from(["debug", "info", "WARN", "Error", "CRITICAL", "fatal"])
          | _TEXT | st.integers(0, 60))
_MESSAGE = _TEXT | _HUGE | st.integers() | st.just(_Broken())
_LINE = st.tuples(_LEVEL, _MESSAGE, st.dictionaries(_TEXT, _DATA, max_size=4) | _DATA)

_RUNS = itertools.count()


@pytest.fixture
def pipeline(database_url: str, fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[tuple[LogStore, ApiServer, FaultServer]]:
    from tasks import runtime

    monkeypatch.setenv("DATABASE_URL", database_url)
    for name, value in {"PUSHER_APP_ID": "1", "PUSHER_KEY": "app-key", "PUSHER_SECRET": "s",
                        **fault_server.env(), "RELAYCAST_BROADCASTERS": "pusher"}.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    store = LogStore.from_url(database_url)
    api = ApiServer({"DATABASE_URL": database_url})
    api.start()
    try:
        yield store, api, fault_server
    finally:
        api.close()
        runtime.reset()
        store.close()


def _expected_message(message: Any) -> str:
    if isinstance(message, _Broken):
        return "<unprintable _Broken>"
    return clean_text(message if isinstance(message, str) else str(message))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(lines=st.lists(_LINE, min_size=1, max_size=8))
def test_any_line_is_stored_broadcast_and_served(
        pipeline: tuple[LogStore, ApiServer, FaultServer], lines: list[tuple[Any, Any, Any]]
) -> None:
    from tasks.broadcast import broadcast

    store, api, pusher = pipeline
    run_id = f"prop-{next(_RUNS)}"
    recorder = Recorder()
    emitter = Emitter(store=lambda: store, enqueue=recorder, flush_interval_ms=60_000)
    try:
        for level, message, data in lines:
            emitter.emit(run_id, level, message, data)
        assert emitter.flush(30), "stored and handed over"
    finally:
        emitter.stop(timeout_s=1)
    stored = store.lines(run_id)
    assert [line.seq for line in stored] == list(range(1, len(lines) + 1)), "every line stored"
    assert [line.message for line in stored] == [_expected_message(m) for _, m, _ in lines]
    for line in stored:
        json.dumps(line.data, allow_nan=False).encode("utf-8")  # plain JSON, valid UTF-8

    for batch in recorder.batches:
        result = broadcast.apply(args=[batch])
        assert result.successful(), result.traceback
    published = [event for request in pusher.requests if request.path == "/apps/1/batch_events"
                 for event in request.json()["batch"]
                 if event["channel"] == f"private-logs-{run_id}"]
    delivered = {e["seq"] for event in published for e in json.loads(event["data"])["events"]}
    assert delivered == set(range(1, len(lines) + 1)), "every line broadcast"
    assert store.broadcast_counts([run_id]) == {(LineState.SENT, "pusher"): len(lines)}

    answer = requests.get(f"{api.url}/runs/{run_id}/logs", timeout=30)
    assert answer.status_code == 200
    assert [e["seq"] for e in answer.json()["events"]] == list(range(1, len(lines) + 1))
