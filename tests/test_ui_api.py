"""The viewer's HTTP side, without a browser: sign-in, /ui/config, runs JSON, downloads and how
static files are served, against ``relaycast api`` in a subprocess (test_ui_static.py checks
the files as shipped; test_viewer_*.py drive Chromium)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
import requests
from support.api import ApiServer
from support.redis_keys import delete_prefixed
from support.seeding import seed_lines
from support.servers import RedisServer

from broadcasters.backends import MemoryBackend, RedisBackend
from broadcasters.state import SharedState
from config import load_settings
from relaycast.api.auth import session_value
from relaycast.api.ui import STATIC_DIR, browser_config
from workflows.models import RunStatus
from workflows.store import LogStore

REPO = Path(__file__).resolve().parents[1]
TOKEN = "viewer-token-for-tests"
SECRET = "pusher-secret-for-tests"
PUSHER = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "app-key", "PUSHER_SECRET": SECRET}
BIG_RUN_LINES = 12_345


@pytest.fixture
def database(sqlite_url: str) -> str:
    store = LogStore.from_url(sqlite_url)
    now = int(time.time() * 1000)
    store.start_run("run-7", "etl", {"rows": 20}, at_ms=now - 5000)
    store.finish_run("run-7", RunStatus.SUCCEEDED, at_ms=now - 2500)
    store.start_run("run-8", "agent", {}, at_ms=now - 1000)
    store.start_run("run-6", "failing", {}, at_ms=now - 9000)
    store.finish_run("run-6", RunStatus.FAILED, "RuntimeError: boom", at_ms=now - 8000)
    seed_lines(store, [{"run_id": "run-7", "seq": i, "ts": now - 5000 + i, "level": "info",
                        "message": f"line {i}", "data": {"i": i}} for i in range(1, 21)])
    seed_lines(store, [{"run_id": "big", "seq": i, "ts": 1_700_000_000_000 + i,
                        "level": "warning" if i % 10 == 0 else "info",
                        "message": f"big line {i} é <b>", "data": {"i": i} if i % 2 else {}}
                       for i in range(1, BIG_RUN_LINES + 1)])
    store.close()
    return sqlite_url


@pytest.fixture
def api(database: str) -> Iterator[ApiServer]:
    server = ApiServer({"DATABASE_URL": database, "RELAYCAST_ADMIN_TOKEN": TOKEN, **PUSHER},
                       "--host", "127.0.0.1")
    server.start()
    yield server
    server.close()


def _signed_in(api: ApiServer) -> requests.Session:
    session = requests.Session()
    answer = session.get(f"{api.url}/ui/?token={TOKEN}", allow_redirects=False, timeout=10)
    assert answer.status_code == 303
    return session


# Sign-in -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ui/", "/ui/runs/run-7"])
def test_a_page_without_a_session_answers_401_saying_how_to_sign_in(api: ApiServer, path: str) -> None:
    answer = requests.get(api.url + path, allow_redirects=False, timeout=10)
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("text/html")
    assert "sign-in link" in answer.text
    assert "relaycast api" in answer.text
    assert TOKEN not in answer.text


@pytest.mark.parametrize("path", ["/runs", "/runs/run-7", "/runs/run-7/logs.ndjson",
                                  "/runs/run-7/logs.txt"])
def test_the_viewers_json_and_downloads_refuse_a_missing_or_wrong_token(api: ApiServer,
                                                                        path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"},
                    {"Cookie": "relaycast_session=" + session_value("wrong")}):
        answer = requests.get(api.url + path, headers=headers, timeout=10)
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.headers["content-type"] == "application/json"
        assert "sign in" in answer.json()["detail"]
    assert requests.get(api.url + path, headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=10).status_code == 200


def test_a_wrong_token_in_the_sign_in_link_answers_401_and_sets_no_cookie(api: ApiServer) -> None:
    answer = requests.get(f"{api.url}/ui/?token=not-{TOKEN}", allow_redirects=False, timeout=10)
    assert answer.status_code == 401
    assert "set-cookie" not in answer.headers
    assert "token in that link is wrong" in answer.text


def test_the_sign_in_link_sets_an_httponly_strict_cookie_and_drops_the_token(api: ApiServer) -> None:
    answer = requests.get(f"{api.url}/ui/runs/run-7?token={TOKEN}&level=error",
                          allow_redirects=False, timeout=10)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/runs/run-7?level=error"
    raw = answer.headers["set-cookie"]
    cookie = SimpleCookie(raw)["relaycast_session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "strict"
    assert cookie["path"] == "/"
    expected = hmac.new(TOKEN.encode(), b"relaycast viewer session v1", hashlib.sha256).hexdigest()
    assert cookie.value == expected, "hex HMAC-SHA256 of a fixed label, keyed by the token"
    assert TOKEN not in raw


def test_the_session_cookie_authorises_the_pages_own_calls(api: ApiServer) -> None:
    session = _signed_in(api)
    for path in ("/ui/", "/ui/runs/run-7", "/runs", "/runs/run-7", "/runs/run-7/logs",
                 "/admin/broadcaster-status", "/runs/run-7/logs.txt"):
        assert session.get(api.url + path, timeout=10).status_code == 200, path
    signed = session.post(api.url + "/pusher/auth", timeout=10,
                          data={"socket_id": "123.456", "channel_name": "private-logs-run-7"})
    digest = hmac.new(SECRET.encode(), b"123.456:private-logs-run-7", hashlib.sha256).hexdigest()
    assert signed.json() == {"auth": f"app-key:{digest}"}


def test_pages_carry_a_content_security_policy_and_are_not_cached(api: ApiServer) -> None:
    page = _signed_in(api).get(api.url + "/ui/runs/run-7", timeout=10)
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"


def test_without_a_token_the_pages_need_no_sign_in(database: str) -> None:
    server = ApiServer({"DATABASE_URL": database})
    server.start()
    try:
        assert requests.get(server.url + "/ui/", timeout=10).status_code == 200
        assert requests.get(server.url + "/runs", timeout=10).status_code == 200
    finally:
        server.close()


def test_the_root_redirects_to_the_runs_list(api: ApiServer) -> None:
    answer = requests.get(api.url + "/", allow_redirects=False, timeout=10)
    assert answer.status_code in (303, 307)
    assert answer.headers["location"] == "/ui/"


def test_relaycast_api_prints_a_working_sign_in_link_at_start(database: str) -> None:
    server = ApiServer({"DATABASE_URL": database, "RELAYCAST_ADMIN_TOKEN": TOKEN},
                       "--host", "127.0.0.1")
    server.start()
    try:
        link = f"http://127.0.0.1:{server.port}/ui/?token={TOKEN}"
        assert link in server.log_tail()
        assert requests.get(link, allow_redirects=False, timeout=10).status_code == 303
    finally:
        server.close()
    open_server = ApiServer({"DATABASE_URL": database})
    open_server.start()
    try:
        assert "token=" not in open_server.log_tail()
    finally:
        open_server.close()


# /ui/config --------------------------------------------------------------------------------


def test_ui_config_is_public_and_holds_no_secret(api: ApiServer) -> None:
    answer = requests.get(api.url + "/ui/config", timeout=10)
    assert answer.status_code == 200
    assert SECRET not in answer.text
    assert TOKEN not in answer.text
    config = answer.json()
    assert config["transport"] == "pusher"
    assert config["pusher"]["key"] == "app-key"
    assert config["pusher"]["cluster"] == "mt1"
    assert config["channel_prefix"] == "private-"
    assert config["poll_interval_ms"] == 1000


def _config(state: SharedState, **env: str) -> dict[str, object]:
    return browser_config(load_settings(**env), state)


def test_the_transport_is_pusher_while_pusher_carries_the_traffic_or_nothing_yet() -> None:
    state = SharedState(MemoryBackend())
    assert _config(state, **PUSHER)["transport"] == "pusher"
    state.swap_active("pusher")
    config = _config(state, **PUSHER)
    assert (config["transport"], config["active_broadcaster"], config["reason"]) == ("pusher", "pusher", None)


ABLY_FIRST = {**PUSHER, "ABLY_API_KEY": "app.key:" + SECRET,
              "RELAYCAST_BROADCASTERS": "ably,pusher,log"}


@pytest.mark.parametrize(("setup", "env", "active", "reason"), [
    ("active log", PUSHER, "log", "the active broadcaster is log"),
    ("active ably", PUSHER, "ably", "the active broadcaster is ably"),
    ("disabled", PUSHER, "log", "pusher disabled: quota exceeded"),
    ("active pusher, disabled", PUSHER, "log", "pusher disabled: quota exceeded"),
    ("paused", PUSHER, "log", "pusher paused: rate limited"),
    ("", ABLY_FIRST, "ably", "the active broadcaster is ably"),
    ("", {}, "log", "no broadcaster a browser can subscribe to is configured"),
    ("", {**PUSHER, "RELAYCAST_BROADCASTERS": "log"}, "log",
     "no broadcaster a browser can subscribe to is configured"),
])
def test_the_transport_is_polling_when_a_browser_cannot_subscribe_to_the_traffic(
        setup: str, env: dict[str, str], active: str, reason: str) -> None:
    """``active_broadcaster`` is where traffic goes: before anything was sent, the first
    listed; once the carrier is disabled or paused, the one the workers move to."""
    state = SharedState(MemoryBackend())
    for step in filter(None, setup.split(", ")):
        if step.startswith("active "):
            state.swap_active(step.split()[1])
        elif step == "disabled":
            state.disable("pusher", "quota exceeded", until=time.time() + 60)
        elif step == "paused":
            state.pause("pusher", 30, "rate limited")
    config = _config(state, **env)
    assert (config["transport"], config["active_broadcaster"]) == ("polling", active)
    assert str(config["reason"]).startswith(reason)


def test_when_ably_ahead_of_pusher_is_disabled_the_browser_follows_traffic_to_pusher() -> None:
    state = SharedState(MemoryBackend())
    state.swap_active("ably")
    state.disable("ably", "quota exceeded", until=None)
    config = _config(state, **ABLY_FIRST)
    assert (config["transport"], config["active_broadcaster"], config["reason"]) == (
        "pusher", "pusher", None)
    state.disable("pusher", "quota exceeded", until=None)
    config = _config(state, **ABLY_FIRST)
    assert (config["transport"], config["active_broadcaster"]) == ("polling", "log")
    assert config["reason"] == "ably disabled: quota exceeded"


def test_browser_websocket_settings_default_to_the_pusher_ones_and_override_them() -> None:
    state = SharedState(MemoryBackend())
    server_side = {**PUSHER, "PUSHER_HOST": "soketi", "PUSHER_PORT": "6001", "PUSHER_SSL": "false"}
    assert _config(state, **server_side)["pusher"] == {
        "key": "app-key", "cluster": "mt1", "wsHost": "soketi", "wsPort": 6001, "forceTLS": False}
    browser = _config(state, **server_side, RELAYCAST_BROWSER_WS_HOST="ws.example.test",
                      RELAYCAST_BROWSER_WS_PORT="443", RELAYCAST_BROWSER_WS_TLS="true",
                      RELAYCAST_BROWSER_POLL_INTERVAL_MS="500")
    assert browser["pusher"] == {"key": "app-key", "cluster": "mt1", "wsHost": "ws.example.test",
                                 "wsPort": 443, "forceTLS": True}
    assert browser["poll_interval_ms"] == 500
    assert _config(state, **PUSHER, PUSHER_CLUSTER="eu")["pusher"] == {
        "key": "app-key", "cluster": "eu", "wsHost": None, "wsPort": None, "forceTLS": True}


def test_ui_config_follows_the_flags_every_worker_shares(database: str,
                                                         redis_server: RedisServer) -> None:
    prefix = f"ui-{time.monotonic_ns()}:"
    server = ApiServer({"DATABASE_URL": database, "REDIS_URL": redis_server.url,
                        "RELAYCAST_STATE_PREFIX": prefix, **PUSHER})
    server.start()
    backend = RedisBackend.from_url(redis_server.url, prefix)
    try:
        state = SharedState(backend)
        assert requests.get(server.url + "/ui/config", timeout=10).json()["transport"] == "pusher"
        state.disable("pusher", "disabled by an operator", until=None)
        config = requests.get(server.url + "/ui/config", timeout=10).json()
        assert (config["transport"], config["reason"]) == (
            "polling", "pusher disabled: disabled by an operator")
        state.enable("pusher")
        state.swap_active("log")
        assert requests.get(server.url + "/ui/config", timeout=10).json()["transport"] == "polling"
        state.swap_active("pusher")
        assert requests.get(server.url + "/ui/config", timeout=10).json()["transport"] == "pusher"
    finally:
        delete_prefixed(backend)
        backend.close()
        server.close()


# Runs --------------------------------------------------------------------------------------


def test_runs_lists_recent_runs_newest_first_with_line_counts(api: ApiServer) -> None:
    session = _signed_in(api)
    runs = session.get(api.url + "/runs", timeout=10).json()["runs"]
    assert [r["run_id"] for r in runs] == ["run-8", "run-7", "run-6"]
    seven = runs[1]
    assert (seven["workflow"], seven["status"], seven["lines"], seven["last_seq"]) == (
        "etl", "succeeded", 20, 20)
    assert seven["duration_s"] == 2.5
    assert seven["channel"] == "private-logs-run-7"
    assert runs[0]["status"] == "running"
    assert runs[0]["duration_s"] is None
    assert runs[2]["error"] == "RuntimeError: boom"
    limited = session.get(api.url + "/runs", params={"limit": 1}, timeout=10).json()["runs"]
    assert [r["run_id"] for r in limited] == ["run-8"]
    failed = session.get(api.url + "/runs", params={"status": "failed"}, timeout=10).json()["runs"]
    assert [r["run_id"] for r in failed] == ["run-6"]
    assert session.get(api.url + "/runs", params={"status": "bogus"}, timeout=10).status_code == 422


def test_one_runs_status(api: ApiServer) -> None:
    session = _signed_in(api)
    run = session.get(api.url + "/runs/run-7", timeout=10).json()
    assert (run["run_id"], run["status"], run["lines"]) == ("run-7", "succeeded", 20)
    lines_only = session.get(api.url + "/runs/big", timeout=10).json()
    assert (lines_only["status"], lines_only["lines"]) == (None, BIG_RUN_LINES)
    assert session.get(api.url + "/runs/nope", timeout=10).status_code == 404
    assert session.get(api.url + "/runs/bad%20id", timeout=10).status_code == 400


def test_the_ndjson_download_streams_every_stored_line(api: ApiServer) -> None:
    answer = _signed_in(api).get(api.url + "/runs/big/logs.ndjson", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    assert answer.headers["content-disposition"] == 'attachment; filename="big.ndjson"'
    lines = [json.loads(x) for x in answer.content.decode("utf-8").splitlines()]
    assert [x["seq"] for x in lines] == list(range(1, BIG_RUN_LINES + 1)), "every line, in order"
    assert lines[0] == {"seq": 1, "ts": 1_700_000_000_001, "level": "info",
                        "message": "big line 1 é <b>", "data": {"i": 1}}


def test_the_text_download_streams_every_stored_line(api: ApiServer) -> None:
    answer = _signed_in(api).get(api.url + "/runs/big/logs.txt", timeout=30)
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.headers["content-disposition"] == 'attachment; filename="big.txt"'
    lines = answer.content.decode("utf-8").splitlines()
    assert len(lines) == BIG_RUN_LINES
    assert lines[0] == '     1 2023-11-14T22:13:20.001Z INFO    big line 1 é <b>  {"i": 1}'
    assert lines[9] == "    10 2023-11-14T22:13:20.010Z WARNING big line 10 é <b>"
    assert lines[-1].startswith(f"{BIG_RUN_LINES:>6} ")


def test_broadcaster_status_adds_per_minute_counts_to_the_report(api: ApiServer) -> None:
    report = _signed_in(api).get(api.url + "/admin/broadcaster-status", timeout=10).json()
    assert [b["name"] for b in report["broadcasters"]] == ["pusher", "log"], "the report is kept"
    assert set(report["sent_per_minute"]) == {"pusher", "log"}
    assert all(series == [0] * 60 for series in report["sent_per_minute"].values())
    assert report["sent_per_minute_until"] % 60 == 0
    assert 0 < report["sent_per_minute_until"] - time.time() <= 60


# Static files ------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "content_type"), [
    ("relaycast.js", "text/javascript; charset=utf-8"),
    ("run.js", "text/javascript; charset=utf-8"),
    ("client/hub.js", "text/javascript; charset=utf-8"),
    ("ui.css", "text/css; charset=utf-8"),
    ("favicon.svg", "image/svg+xml"),
    ("vendor/pusher.min.js", "text/javascript; charset=utf-8"),
])
def test_static_files_are_public_with_their_content_types(api: ApiServer, path: str,
                                                         content_type: str) -> None:
    answer = requests.get(f"{api.url}/ui/static/{path}", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == content_type
    assert answer.content == (STATIC_DIR / path).read_bytes()
    again = requests.get(f"{api.url}/ui/static/{path}", timeout=10,
                         headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("path", ["../auth.py", "..%2Fauth.py", "index.html", "nope.js",
                                  "vendor/../../app.py"])
def test_nothing_else_is_served_as_a_static_file(api: ApiServer, path: str) -> None:
    assert requests.get(f"{api.url}/ui/static/{path}", timeout=10).status_code == 404
