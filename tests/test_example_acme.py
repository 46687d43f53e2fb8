"""``examples/acme``, a Celery team's own project, under relaycast as the README walks through
it: a real ``celery -A relaycast worker`` started in that directory (beside acme's own
``config.py`` and ``tasks.py``) with ``RELAYCAST_WORKFLOWS=acme.jobs``, ``relaycast run``,
``relaycast logs --json``, a Pusher-protocol subscriber for the app event, and the viewer in
Chromium."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from support.api import ApiServer
from support.browser import CHROMIUM, chromium
from support.pusher_ws import Subscriber
from support.runs import run_env
from support.servers import Soketi
from support.workers import CeleryWorker, Started, relaycast_cli

REPO = Path(__file__).resolve().parents[1]
ACME = REPO / "examples" / "acme"
TOKEN = "acme-token-for-the-example-test"
ARTIFACTS = Path(os.environ.get("RELAYCAST_ARTIFACTS") or REPO / "tests" / "artifacts")

#: What the nightly run holds, in the order the workflow wrote it: (level, message, where
#: from: the logger's name, "stdout", or None for a LogStream line and the retry line).
EXPECTED = [
    ("warning", "retry 1/1 in 1 s: ConnectionError: warehouse not reachable yet", None),
    ("info", "nightly import starts", None),
    ("info", "connected to the warehouse", "acme.nightly"),
    ("warning", "slow response from the warehouse (850 ms)", "warehouse_client"),
    ("info", "imported order 1", "acme.jobs"),
    ("info", "imported order 2", "acme.jobs"),
    ("info", "imported order 3", "acme.jobs"),
    ("info", "imported 3 orders", "stdout"),
    ("info", "nightly import done", None),
]


def _origin(data: dict[str, Any]) -> str | None:
    return data.get("logger") or data.get("stream")


@pytest.mark.timeout(240)
def test_acme_nightly_under_a_real_worker_every_record_once_in_order_and_in_the_viewer(
        broker: str, sqlite_url: str, soketi: Soketi, subscriber_factory: Callable[..., Subscriber],
        workers: Started, closing: list[Any]) -> None:
    assert (ACME / "config.py").is_file()
    assert (ACME / "tasks.py").is_file(), "acme's own Celery app stands beside the worker"
    env = run_env(broker, sqlite_url, **soketi.env(), RELAYCAST_BROADCASTERS="pusher,log",
                  RELAYCAST_WORKFLOWS="acme.jobs", RELAYCAST_ADMIN_TOKEN=TOKEN)
    workers.start(CeleryWorker(env, concurrency=2, cwd=ACME))
    subscriber = subscriber_factory()
    subscriber.subscribe("private-orders")

    listed = relaycast_cli("workflows", "--json", env=env, cwd=ACME)
    assert [w["name"] for w in json.loads(listed.stdout)] == ["nightly"], listed.stderr

    run_id = f"nightly-{uuid.uuid4().hex[:8]}"
    started = relaycast_cli("run", "nightly", "--param", "orders=3", "--run-id", run_id,
                            env=env, cwd=ACME)
    assert started.returncode == 0, started.stderr
    follow = relaycast_cli("logs", run_id, "--follow", env=env, cwd=ACME, timeout_s=120)
    assert follow.returncode == 0, follow.stderr

    logs = relaycast_cli("logs", run_id, "--json", env=env, cwd=ACME)
    assert logs.returncode == 0, logs.stderr
    lines = json.loads(logs.stdout)
    assert [(line["level"], line["message"], _origin(line["data"])) for line in lines] == EXPECTED
    assert [line["seq"] for line in lines] == list(range(1, len(EXPECTED) + 1))
    assert lines[1]["data"] == {"orders": 3}

    shipped = subscriber.wait_for_events("private-orders", "shipped", count=1, timeout_s=60)
    assert [event["data"] for event in shipped] == [{"orders": 3}]

    require(CHROMIUM.exists(), f"{CHROMIUM} (apt-get install chromium; tools/test.sh does it)")
    api = ApiServer(env, "--host", "127.0.0.1", cwd=ACME)
    closing.append(api)
    api.start()
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1360, "height": 760})
        context.set_default_timeout(120_000)  # a hang guard on a busy machine, not a bound
        page = context.new_page()
        page.goto(f"{api.url}/ui/?token={TOKEN}")
        page.wait_for_selector("#workflow-filter option[value='nightly']", state="attached",
                               timeout=120_000)
        page.select_option("#workflow-filter", "nightly")
        page.wait_for_selector(f"#runs-body tr[data-run-id='{run_id}']", timeout=120_000)
        page.goto(f"{api.url}/ui/runs/{run_id}")
        page.wait_for_selector(f"#log[data-line-count='{len(EXPECTED)}']", timeout=60_000)
        shown = page.text_content("#log") or ""
        for _level, message, _from in EXPECTED:
            assert shown.count(message) == 1, message
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "acme-nightly-run.png"))
        context.close()
