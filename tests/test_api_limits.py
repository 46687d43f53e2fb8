"""Bounded inputs where outsiders reach ``relaycast api`` (issue 19): request bodies capped
before they are read, malformed signed webhooks answered 400, over-long channel names
neither recorded nor echoed.

A real ``relaycast api`` (uvicorn subprocess), a private Redis for occupancy.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from support.api import ApiServer
from support.runs import run_env

from broadcasters.backends import RedisBackend
from broadcasters.occupancy import Occupancy
from broadcasters.state import SharedState
from broadcasters.wire import MAX_CHANNEL_CHARS
from relaycast.api.app import MAX_BODY_BYTES

KEY, SECRET = "app-key", "app-secret"
MiB = 1024 * 1024
HOSTILE_BYTES = 200 * MiB


@pytest.fixture
def api(broker: str, sqlite_url: str) -> Iterator[ApiServer]:
    env = run_env(broker, sqlite_url, PUSHER_APP_ID="1", PUSHER_KEY=KEY, PUSHER_SECRET=SECRET,
                  RELAYCAST_OCCUPANCY="webhooks", RELAYCAST_ADMIN_TOKEN="t" * 20)
    server = ApiServer(env)
    server.start()
    yield server
    server.close()


@pytest.fixture
def occupancy(api: ApiServer) -> Iterator[Occupancy]:
    state = SharedState(RedisBackend.from_url(api.env["REDIS_URL"],
                                              api.env["RELAYCAST_STATE_PREFIX"]))
    yield Occupancy(state, reconcile_s=60)
    state.close()


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _signed(body: bytes) -> dict[str, str]:
    return {"X-Pusher-Key": KEY, "Content-Type": "application/json",
            "X-Pusher-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}


def _webhook(*events: dict[str, Any], time_ms: Any = None) -> bytes:
    return json.dumps({"time_ms": int(time.time() * 1000) if time_ms is None else time_ms,
                       "events": list(events)}).encode()


def _zeros(total: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """``total`` bytes, streamed: never more than one chunk in the client's memory."""
    block = b"0" * chunk
    sent = 0
    while sent < total:
        yield block
        sent += chunk


def _post_streamed(api: ApiServer, path: str, headers: dict[str, str], total: int, *,
                   declared: bool) -> tuple[int, str]:
    """POST ``total`` bytes from a generator, with ``Content-Length`` declared or chunked; the
    answer even when the server stops reading (and closes) before the body is all sent."""
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=120)
    try:
        extra = {"Content-Length": str(total)} if declared else {}
        # Refused before the end of the body: its answer is already on the way.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.request("POST", path, body=_zeros(total), headers={**headers, **extra},
                               encode_chunked=not declared)
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_four_hostile_200_mb_webhooks_are_refused_413_without_growing_the_api(
        api: ApiServer, declared: bool) -> None:
    """A wrong signature on a 200 MB body used to be found only after reading all of it:
    four at once took the API from 86 to 1,381 MiB before their 401s."""
    url = f"{api.url}/pusher/webhook"
    headers = {"X-Pusher-Key": KEY, "X-Pusher-Signature": "0" * 64}
    assert requests.post(url, data=b"{}", headers=headers, timeout=10).status_code == 401, (
        "warm: the route and what it imports are loaded before measuring")
    assert api.pid is not None
    before_kib = _status_kib(api.pid, "VmRSS")
    Path(f"/proc/{api.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here

    def post(_: int) -> tuple[int, str]:
        return _post_streamed(api, "/pusher/webhook", headers, HOSTILE_BYTES, declared=declared)

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(post, range(4)))
    peak_kib = _status_kib(api.pid, "VmHWM")
    after_kib = _status_kib(api.pid, "VmRSS")
    print(f"\n{'declared' if declared else 'chunked'}: RSS {before_kib / 1024:.1f} MiB before, "
          f"peak {peak_kib / 1024:.1f} MiB, {after_kib / 1024:.1f} MiB after four 200 MB posts")
    assert [status for status, _ in answers] == [413] * 4, answers
    assert all(str(MAX_BODY_BYTES) in json.loads(text)["detail"] for _, text in answers)
    assert (peak_kib - before_kib) < 50 * 1024, "grew by less than 50 MiB at its peak"
    assert requests.get(api.url + "/healthz", timeout=10).status_code == 200, "still serving"


def test_a_chunked_body_under_the_cap_still_reaches_the_webhook(
        api: ApiServer, occupancy: Occupancy) -> None:
    """The cap reads a chunked body itself: what it lets through is the whole body, intact."""
    channel = "private-logs-chunked-run"
    body = _webhook({"name": "channel_occupied", "channel": channel})
    answer = requests.post(f"{api.url}/pusher/webhook", data=iter([body[:10], body[10:]]),
                           headers=_signed(body), timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["recorded"] == 1
    assert occupancy.occupied_channels() == [channel]


@pytest.mark.parametrize(("body", "says"), [
    (b'[{"name": "channel_occupied", "channel": "private-logs-a"}]', "must be a JSON object"),
    (_webhook({"name": "channel_occupied", "channel": "private-logs-a"}, time_ms="1700000000000"),
     "time_ms must be a number"),
    (json.dumps({"time_ms": int(time.time() * 1000), "events": {"name": "x"}}).encode(),
     "events must be a list"),
    (_webhook({"name": "channel_occupied"}), "events[0] must be an object with a string name"),
    (_webhook({"channel": "private-logs-a"}), "events[0] must be an object"),
    (b"not json at all", "body is not JSON"),
    (b"\xff\xfe{}", "body is not JSON"),
    (b"[" * 100_000, "nested too deeply"),
], ids=["list", "time_ms-string", "events-object", "no-channel", "no-name", "not-json",
        "not-utf8", "deep"])
def test_a_signed_body_that_is_no_webhook_is_a_400_with_its_reason(
        api: ApiServer, occupancy: Occupancy, body: bytes, says: str) -> None:
    """Correctly signed, so the sender holds the secret: a mistake to report, not a 500."""
    answer = requests.post(f"{api.url}/pusher/webhook", data=body, headers=_signed(body),
                           timeout=10)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert says in detail and "\n" not in detail
    assert occupancy.occupied_channels() == []


def test_a_signed_webhook_naming_a_5_kb_channel_records_only_real_channels(
        api: ApiServer, occupancy: Occupancy) -> None:
    """It used to record any length: 2,000 channels of 5 KB put 10 MB in the occupancy hash."""
    huge = "private-logs-" + "r" * 5000
    foreign = "presence-somebody-elses"
    genuine = "private-logs-genuine-run"
    body = _webhook({"name": "channel_occupied", "channel": huge},
                    {"name": "channel_occupied", "channel": foreign},
                    {"name": "channel_occupied", "channel": "private-admin-events"},
                    {"name": "channel_occupied", "channel": genuine})
    answer = requests.post(f"{api.url}/pusher/webhook", data=body, headers=_signed(body),
                           timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["recorded"] == 1
    assert answer.json()["ignored"] == 2, "the over-long and the foreign channel, counted"
    [table] = occupancy.state.backend.hashes(["occupancy"])
    assert set(table) == {genuine}, "nothing else in the hash"
    assert "r" * 200 not in api.log_tail(), "logged cut short"


def test_pusher_auth_refuses_an_over_long_channel_without_repeating_it(api: ApiServer) -> None:
    channel = "private-logs-" + "r" * 5000
    answer = requests.post(f"{api.url}/pusher/auth", timeout=10,
                           headers={"Authorization": "Bearer " + "t" * 20},
                           data={"socket_id": "123.456", "channel_name": channel})
    assert answer.status_code == 400
    assert str(MAX_CHANNEL_CHARS) in answer.json()["detail"]
    assert "r" * 200 not in answer.text, "the name is not echoed back"
