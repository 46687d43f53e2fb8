"""The HTTP API, served by `relaycast api` (uvicorn) in a subprocess."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.seeding import seed_lines
from support.servers import free_port
from support.workers import project_env

from workflows.store import LogStore

TOKEN = "admin-token-for-tests"
SECRET = "pusher-secret-for-tests"


class Api:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relaycast", "api", "--port", str(self.port), *args],
            env=project_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"api exited: {self.process.communicate()}")
            try:
                requests.get(self.url + "/healthz", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError("api did not start")

    def close(self) -> str:
        self.process.terminate()
        _, err = self.process.communicate(timeout=10)
        return err


@pytest.fixture
def database(sqlite_url: str) -> str:
    store = LogStore.from_url(sqlite_url)
    seed_lines(store, [{"run_id": "run-7", "seq": i, "ts": 1000 + i, "level": "info",
                        "message": f"line {i}", "data": {"i": i}} for i in range(1, 21)])
    store.close()
    return sqlite_url


@pytest.fixture
def api(database: str) -> Iterator[Api]:
    server = Api({"DATABASE_URL": database, "RELAYCAST_ADMIN_TOKEN": TOKEN,
                  "PUSHER_APP_ID": "1", "PUSHER_KEY": "app-key", "PUSHER_SECRET": SECRET},
                 "--host", "127.0.0.1")
    yield server
    server.close()


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/admin/broadcaster-status"), ("get", "/runs/run-7/logs"), ("post", "/pusher/auth"),
    ("get", "/docs"), ("get", "/openapi.json")])
def test_every_endpoint_refuses_a_missing_or_wrong_token(api: Api, method: str, path: str) -> None:
    for headers in ({}, _auth("wrong"), {"Authorization": TOKEN}):
        answer = requests.request(method, api.url + path, headers=headers, timeout=10)
        assert answer.status_code == 401, (headers, answer.text)


def test_every_endpoint_answers_with_the_right_token(api: Api) -> None:
    status = requests.get(api.url + "/admin/broadcaster-status", headers=_auth(), timeout=10)
    assert status.status_code == 200
    assert [b["name"] for b in status.json()["broadcasters"]] == ["pusher", "log"]
    logs = requests.get(api.url + "/runs/run-7/logs", headers=_auth(), timeout=10)
    assert logs.status_code == 200
    auth = requests.post(api.url + "/pusher/auth", headers=_auth(), timeout=10,
                         data={"socket_id": "123.456", "channel_name": "private-logs-run-7"})
    assert auth.status_code == 200
    schema = requests.get(api.url + "/openapi.json", headers=_auth(), timeout=10)
    assert "/runs/{run_id}/logs" in schema.json()["paths"]
    docs = requests.get(api.url + "/docs", headers=_auth(), timeout=10)
    assert docs.status_code == 200 and "/openapi.json" in docs.text


def test_history_after_seq_returns_exactly_the_later_lines(api: Api) -> None:
    answer = requests.get(api.url + "/runs/run-7/logs", params={"after_seq": 15}, headers=_auth(),
                          timeout=10).json()
    assert [e["seq"] for e in answer["events"]] == [16, 17, 18, 19, 20]
    assert answer["events"][0] == {"seq": 16, "ts": 1016, "level": "info", "message": "line 16",
                                   "data": {"i": 16}}
    assert answer["channel"] == "private-logs-run-7"
    assert answer["next_after_seq"] == 20
    assert requests.get(api.url + "/runs/run-7/logs", params={"after_seq": 20}, headers=_auth(),
                        timeout=10).json()["events"] == []
    bad = requests.get(api.url + "/runs/bad%20id/logs", headers=_auth(), timeout=10)
    assert bad.status_code == 400
    assert "letters, digits" in bad.json()["detail"]
    for after in ("9223372036854775808", "2147483648", "-1", "ten"):
        huge = requests.get(api.url + "/runs/run-7/logs", params={"after_seq": after},
                            headers=_auth(), timeout=10)
        assert huge.status_code == 422, after


def test_history_never_fails_on_text_an_older_version_stored(api: Api, database: str) -> None:
    """Data stored before lone surrogates were cleaned (its JSON kept them escaped)."""
    store = LogStore.from_url(database)
    seed_lines(store, [{"run_id": "old-run", "seq": 1, "ts": 1, "level": "info",
                        "message": "processing file",
                        "data": {"path": "/data/report-\udcff.csv"}}])
    store.close()
    answer = requests.get(api.url + "/runs/old-run/logs", headers=_auth(), timeout=10)
    assert answer.status_code == 200
    [event] = answer.json()["events"]
    assert event["data"] == {"path": "/data/report-\ufffd.csv"}


def test_pusher_auth_signs_relaycast_private_channels(api: Api) -> None:
    answer = requests.post(api.url + "/pusher/auth", headers=_auth(), timeout=10,
                           data={"socket_id": "123.456", "channel_name": "private-logs-run-7"})
    expected = hmac.new(SECRET.encode(), b"123.456:private-logs-run-7", hashlib.sha256).hexdigest()
    assert answer.json() == {"auth": f"app-key:{expected}"}


@pytest.mark.parametrize("channel", ["private-admin-events", "private-admin-health"])
def test_pusher_auth_signs_relaycasts_admin_channels(api: Api, channel: str) -> None:
    answer = requests.post(api.url + "/pusher/auth", headers=_auth(), timeout=10,
                           data={"socket_id": "123.456", "channel_name": channel})
    assert answer.status_code == 200


# private-billing and private-chat-logs-run-7 are app channels (broadcast()): signed for the
# admin, see tests/test_app_events.py.
@pytest.mark.parametrize("channel", ["logs-run-7", "presence-logs-run-7",
                                     "private-encrypted-logs-run-7", "private-admin-secrets",
                                     "private-admin-events-extra", "private-logs-bad id"])
def test_pusher_auth_refuses_other_channels(api: Api, channel: str) -> None:
    answer = requests.post(api.url + "/pusher/auth", headers=_auth(), timeout=10,
                           data={"socket_id": "123.456", "channel_name": channel})
    assert answer.status_code == 403


def test_without_a_token_the_api_listens_on_loopback_only_and_says_so(database: str) -> None:
    server = Api({"DATABASE_URL": database})
    try:
        open_answer = requests.get(server.url + "/runs/run-7/logs", timeout=10)
        assert open_answer.status_code == 200
    finally:
        err = server.close()
    assert "loopback only" in err
    refused = subprocess.run([sys.executable, "-m", "relaycast", "api", "--host", "0.0.0.0"],
                             env=project_env({"DATABASE_URL": database}), capture_output=True,
                             text=True, timeout=30, check=False)
    assert refused.returncode == 2
    assert "RELAYCAST_ADMIN_TOKEN" in refused.stderr


def test_the_secret_never_appears_in_answers_or_output(api: Api, tmp_path: Path) -> None:
    texts = [requests.get(api.url + "/admin/broadcaster-status", headers=_auth(), timeout=10).text,
             requests.post(api.url + "/pusher/auth", headers=_auth(), timeout=10,
                           data={"socket_id": "1.2", "channel_name": "private-logs-a"}).text]
    texts.append(api.close())
    assert all(SECRET not in text and TOKEN not in text for text in texts)
