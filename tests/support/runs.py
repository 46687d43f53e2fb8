"""Starting runs the way people do (``relaycast run``) and reading what subscribers got."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from support.pusher_ws import Subscriber
from support.workers import relaycast_cli

#: The ordering gate's bound in tests: a hang guard. The bound is for a predecessor that is
#: lost (its worker died); on a loaded machine a live one can take longer than the default 2 s
#: to publish, and a test that asserts order must not depend on how busy the machine is.
#: Tests where a worker dies (and a predecessor may be lost for good) keep the default 2 s.
TEST_ORDER_WAIT_MS = "10000"


def run_env(broker: str, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a test's processes: Redis as broker and state, under its own prefix."""
    return {"REDIS_URL": broker, "DATABASE_URL": database_url,
            "RELAYCAST_STATE_PREFIX": f"t{uuid.uuid4().hex[:6]}:",
            "RELAYCAST_FLUSH_INTERVAL_MS": "50", "RELAYCAST_ORDER_WAIT_MS": TEST_ORDER_WAIT_MS,
            **extra}


def start_run(env: dict[str, str], workflow: str, run_id: str, **params: Any) -> None:
    argv = ["run", workflow, "--run-id", run_id]
    for key, value in params.items():
        argv += ["--param", f"{key}={json.dumps(value)}"]
    result = relaycast_cli(*argv, env=env)
    assert result.returncode == 0, result.stderr
    assert f"run id:  {run_id}" in result.stdout


def lines_received(subscriber: Subscriber, channel: str) -> list[dict[str, Any]]:
    """Every line the subscriber got on ``channel``, in arrival order (repeats included)."""
    return [line for e in subscriber.events(channel, "log") for line in e["data"]["events"]]


def seqs_received(subscriber: Subscriber, channel: str) -> list[int]:
    return [line["seq"] for line in lines_received(subscriber, channel)]


def has_lines(subscriber: Subscriber, channel: str, count: int) -> Callable[[object], bool]:
    """A ``wait_for`` predicate: ``count`` distinct lines of ``channel`` have arrived."""
    return lambda _: len(set(seqs_received(subscriber, channel))) >= count


def wait_for_lines(subscriber: Subscriber, channel: str, count: int, timeout_s: float = 90
                   ) -> list[int]:
    subscriber.wait_for(has_lines(subscriber, channel, count), timeout_s)
    return seqs_received(subscriber, channel)


def subscribe(subscriber: Subscriber, *channels: str) -> None:
    for channel in channels:
        subscriber.subscribe(channel)
