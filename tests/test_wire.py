"""Names and formats shared across processes: channels, run ids, batches, message ids."""

from __future__ import annotations

import re

import pytest

from broadcasters.wire import (
    Channels,
    InvalidRunId,
    batch_lines,
    describe_batch,
    message_id,
    new_batch,
    pack_runs,
    run_of_message_id,
)


def test_channel_names_under_the_prefix() -> None:
    channels = Channels("private-acme-")
    assert channels.logs("etl-1") == "private-acme-logs-etl-1"
    assert channels.admin_events == "private-acme-admin-events"
    assert channels.admin_health == "private-acme-admin-health"
    assert channels.run_id_of("private-acme-logs-etl-1") == "etl-1"
    assert channels.run_id_of("private-acme-admin-events") is None
    assert channels.run_id_of("private-other-logs-etl-1") is None


@pytest.mark.parametrize(("channel", "ours"), [
    ("private-logs-etl-1", True), ("private-admin-events", True), ("private-admin-health", True),
    ("private-admin-secrets", False), ("private-admin-events-2", False),
    ("private-logs-", False), ("private-logs-bad id", False), ("presence-logs-etl-1", False),
    ("logs-etl-1", False), ("private-encrypted-logs-etl-1", False),
])
def test_only_relaycasts_own_channels_are_ours(channel: str, ours: bool) -> None:
    assert Channels("private-").is_ours(channel) is ours


@pytest.mark.parametrize("run_id", ["has space", "a/b", "ünïcode", "tab\there", "", "emoji-🚀",
                                    "run-1\n", 12, None])
def test_a_run_id_a_channel_cannot_hold_is_refused_saying_what_is_allowed(run_id: object) -> None:
    with pytest.raises(InvalidRunId, match=re.escape("use only letters, digits and _ - = @ , . ;")):
        Channels().validate_run_id(run_id)


def test_the_longest_run_id_depends_on_sql_and_the_prefix() -> None:
    assert Channels().validate_run_id("x" * 128) == "x" * 128
    with pytest.raises(InvalidRunId, match="129 characters; at most 128"):
        Channels().validate_run_id("x" * 129)
    long_prefix = Channels("private-" + "p" * 56)
    assert long_prefix.max_run_id_chars == 164 - 64 - len("logs-")
    with pytest.raises(InvalidRunId, match="at most 95"):
        long_prefix.validate_run_id("x" * 96)


def test_message_ids_name_the_run_and_the_seqs_they_carry() -> None:
    assert message_id("etl:2024", 5, 9) == "etl:2024:5-9"
    assert run_of_message_id("etl:2024:5-9") == "etl:2024"


def test_a_batch_says_what_it_carries() -> None:
    batch = new_batch([{"run_id": "a", "channel": "private-logs-a", "events": [
        {"seq": 1, "ts": 1, "level": "info", "message": "m", "data": {}}] * 3}], [])
    assert set(batch) == {"runs", "admin"}, "ordered, not live-only: the defaults"
    assert batch_lines(batch) == 3
    assert describe_batch(batch) == "runs=a, lines=3, admin=0"
    replay = new_batch(ordered=False, live_only=True)
    assert (replay["ordered"], replay["live_only"]) == (False, True)


def test_pack_runs_cuts_long_runs_and_never_overfills_a_group() -> None:
    runs = [("a", list(range(5))), ("b", [10, 11]), ("c", [20, 21, 22])]
    assert pack_runs(runs, 3) == [
        [("a", [0, 1, 2])], [("a", [3, 4])], [("b", [10, 11])], [("c", [20, 21, 22])]]
    assert pack_runs(runs, 10) == [runs]
    assert pack_runs([], 3) == []
