"""Replay end to end: lines a failing provider dead-lettered are delivered by `relaycast replay`
once, and two replays at once send every line once and tell the truth about claimed lines
(real worker, broker, soketi and subscriber). The store's and the command's parts are in
test_replay.py."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select
from support.pusher_ws import Subscriber
from support.runs import has_lines, run_env, seqs_received, start_run
from support.seeding import replay_row, seed_lines
from support.servers import Soketi
from support.workers import CeleryWorker, ForwardingProxy, Started, relaycast_cli

from workflows.models import LineState, LogLine
from workflows.store import LogStore

NOW = 1_800_000_000_000
MINUTE = 60_000
SubscriberFactory = Callable[..., Subscriber]
PUSHER = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "k", "PUSHER_SECRET": "s"}


# End to end ------------------------------------------------------------------------------------


def _wait_counts(store: LogStore, run_id: str, expected: dict[tuple[str, str | None], int],
                 timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while store.broadcast_counts([run_id]) != expected:
        assert time.monotonic() < deadline, store.broadcast_counts([run_id])
        time.sleep(0.2)


@pytest.mark.timeout(180)
def test_lines_dead_lettered_by_a_failing_provider_are_delivered_by_replay_once(
    broker: str, database_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore],
) -> None:
    proxy = ForwardingProxy(soketi.url)
    proxy.down = True  # every call answered 503
    try:
        env = run_env(broker, database_url, **{**soketi.env(), "PUSHER_PORT": str(proxy.port)},
                      RELAYCAST_BROADCASTERS="pusher", RELAYCAST_BROADCAST_MAX_RETRIES="0")
        worker = CeleryWorker(env, concurrency=2)
        workers.start(worker)
        run_id = f"replayed-{uuid.uuid4().hex[:6]}"
        channel = f"private-logs-{run_id}"
        subscriber = subscriber_factory()
        subscriber.subscribe(channel)
        store = open_store(database_url)
        start_run(env, "burst", run_id, lines=300)
        _wait_counts(store, run_id, {(LineState.FAILED, None): 300})
        assert seqs_received(subscriber, channel) == []
        assert proxy.requests > 0, "the provider was asked, and refused"

        proxy.down = False  # the provider is healthy again
        dry = relaycast_cli("replay", run_id, "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert f"would replay 300 line(s) of 1 run(s) (run {run_id}): failed 300" in dry.stdout
        first = relaycast_cli("replay", run_id, env=env)
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines()[:2] == [
            f"enqueued 300 line(s) of 1 run(s) in 1 batch(es) (run {run_id}): failed 300",
            f"  {run_id}  seqs 1-300"]
        subscriber.wait_for(has_lines(subscriber, channel, 300), timeout_s=60)
        assert sorted(set(seqs_received(subscriber, channel))) == list(range(1, 301))
        _wait_counts(store, run_id, {(LineState.SENT, "pusher"): 300})

        requests, received = proxy.requests, len(seqs_received(subscriber, channel))
        for argv in (["replay", run_id], ["replay", "--failed"]):
            again = relaycast_cli(*argv, env=env)
            assert again.returncode == 0, again.stderr
            assert again.stdout.startswith("nothing to replay"), again.stdout
            assert "in flight" not in again.stdout
        time.sleep(2)
        assert proxy.requests == requests, "the second replay sent nothing to the provider"
        assert len(seqs_received(subscriber, channel)) == received
        assert store.broadcast_counts([run_id]) == {(LineState.SENT, "pusher"): 300}
    finally:
        proxy.close()


#: Lines, runs and lines per call of the two replays at once.
RACE_LINES, RACE_RUNS, RACE_LIMIT = 20_000, 10, 1000
_ENQUEUED = re.compile(r"^enqueued ([\d,]+) line\(s\) of ")


def _replay_until_done(env: dict[str, str], calls: list[Any]) -> None:
    """An operator following the runbook: ``relaycast replay --failed`` again and again until
    it does not enqueue anything (at most twice the calls the lines need)."""
    for _ in range(2 * RACE_LINES // RACE_LIMIT):
        result = relaycast_cli("replay", "--failed", "--limit", str(RACE_LIMIT), env=env)
        calls.append(result)
        if result.returncode != 0 or not _ENQUEUED.match(result.stdout):
            return


@pytest.mark.timeout(600)
def test_two_replays_at_once_send_every_line_once_and_neither_says_nothing_while_lines_are_claimed(
    broker: str, database_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore],
) -> None:
    """20,000 failed lines, two operators each running ``relaycast replay --failed --limit
    1000`` until it stops enqueuing, the second starting once the first has claimed lines.
    No worker runs yet, so every claimed line stays claimed: each must end saying how many
    lines the other run holds (exit 3), never ``nothing to replay``. Then a broadcast worker
    sends them: every line reaches a subscriber once, and only then is there nothing to
    replay."""
    from tasks.replay import CLAIM_S

    store = open_store(database_url)
    stored_ms = int(time.time() * 1000) - 10 * MINUTE
    runs = [f"race-{uuid.uuid4().hex[:6]}-{i}" for i in range(RACE_RUNS)]
    per_run = RACE_LINES // RACE_RUNS
    seed_lines(store, [replay_row(run_id, seq, stored_ms) for run_id in runs
                       for seq in range(1, per_run + 1)])
    store.mark([(run_id, 1, per_run) for run_id in runs], LineState.FAILED)
    env = run_env(broker, database_url, **soketi.env(), RELAYCAST_BROADCASTERS="pusher")
    subscriber = subscriber_factory()
    for run_id in runs:
        subscriber.subscribe(f"private-logs-{run_id}")

    def claimed_lines() -> int:
        with store.engine.connect() as connection:
            return int(connection.execute(select(func.count()).where(
                LogLine.swept_at.is_not(None))).scalar_one())

    calls: dict[str, list[Any]] = {"first": [], "second": []}
    started_ms = int(time.time() * 1000)
    first = threading.Thread(target=_replay_until_done, args=(env, calls["first"]))
    first.start()
    deadline = time.monotonic() + 120
    while not claimed_lines() and first.is_alive():
        assert time.monotonic() < deadline, "the first replay never claimed lines"
        time.sleep(0.05)
    assert claimed_lines(), calls["first"]
    _replay_until_done(env, calls["second"])  # the second, while the first goes on
    first.join()
    lapses = {time.strftime("%H:%M:%S UTC", time.gmtime(second + CLAIM_S))
              for second in range(started_ms // 1000, int(time.time()) + 1)}

    enqueued = 0
    for name, results in calls.items():
        *taking, last = results
        for result in taking:
            assert result.returncode == 0, (name, result.stdout, result.stderr)
            enqueued += int(_ENQUEUED.match(result.stdout)[1].replace(",", ""))  # type: ignore[index]
        assert "nothing to replay" not in "".join(r.stdout for r in results), \
            f"the {name} replay said nothing to replay while no line was sent yet"
        assert last.returncode == 3, (name, last.stdout, last.stderr)
        said = last.stdout.strip()
        assert said.startswith(f"not finished (every run): {RACE_LINES:,} line(s) are being "
                               "replayed by another run of this command or the sweeper "
                               "(claimed until "), said
        assert said.endswith("); run it again after that"), said
        until = said.split("(claimed until ")[1].split(")")[0]
        assert until in lapses, f"the last claim (made while the replays ran) lapses at {until}"
    assert enqueued == RACE_LINES, "each line was claimed and enqueued by one replay only"
    assert all(calls.values()) and len(calls["second"]) > 1, \
        "the second replay took lines too: the two ran over the same lines at once"
    dry = relaycast_cli("replay", "--failed", "--dry-run", env=env)
    assert (dry.returncode, dry.stdout.split(" (claimed")[0]) == (
        3, f"not finished (every run): {RACE_LINES:,} line(s) are being replayed by another "
           "run of this command or the sweeper"), dry.stdout + dry.stderr

    workers.start(CeleryWorker(env, concurrency=2))
    for run_id in runs:
        _wait_counts(store, run_id, {(LineState.SENT, "pusher"): per_run}, timeout_s=300)
    for run_id in runs:
        channel = f"private-logs-{run_id}"
        subscriber.wait_for(has_lines(subscriber, channel, per_run), timeout_s=120)
        assert sorted(seqs_received(subscriber, channel)) == list(range(1, per_run + 1)), \
            f"every line of {run_id} was published once"
    for argv in (["replay", "--failed"], ["replay", "--failed", "--dry-run"]):
        done = relaycast_cli(*argv, env=env)
        assert (done.returncode, done.stdout) == (0, "nothing to replay (every run)\n"), \
            done.stdout + done.stderr
