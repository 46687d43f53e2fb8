"""``GET /readyz`` (relaycast/api/readiness.py): 200 only while the database, Redis and the
broker answer; 503 naming what does not. ``/healthz`` stays liveness (200 throughout)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy.engine import make_url
from support.api import ApiServer
from support.servers import RedisServer
from support.tcp_proxy import SwitchableProxy


def ready(api: ApiServer) -> tuple[int, dict[str, Any]]:
    answer = requests.get(api.url + "/readyz", timeout=30)
    body: dict[str, Any] = answer.json()
    return answer.status_code, body


def wait_for_status(api: ApiServer, status: int, timeout_s: float = 60
                    ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        code, body = ready(api)
        if code == status:
            return body
        assert time.monotonic() < deadline, f"/readyz still {code}: {body}"
        time.sleep(0.2)


@pytest.fixture
def postgres_proxy(postgres_url: str) -> Iterator[tuple[SwitchableProxy, str]]:
    """A proxy to the test's own PostgreSQL database, off to begin with; the URL through it."""
    target = make_url(postgres_url)
    proxy = SwitchableProxy(target.host or "127.0.0.1", target.port or 5432)
    yield proxy, target.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)
    proxy.off()


def test_readyz_names_the_database_while_postgresql_refuses_connections(
    postgres_proxy: tuple[SwitchableProxy, str], broker: str, closing: list[Any],
) -> None:
    proxy, url = postgres_proxy
    api = ApiServer({"DATABASE_URL": url, "REDIS_URL": broker})
    closing.append(api)
    api.start()  # waits for /healthz: the process is alive without its database

    code, body = ready(api)
    assert code == 503
    assert body["ready"] is False
    assert body["failed"] == ["database"]
    assert body["checks"]["database"].startswith("unreachable: ")
    assert body["checks"]["redis"] == body["checks"]["broker"] == "ok"

    proxy.on()
    body = wait_for_status(api, 200)
    assert body == {"ready": True, "failed": [],
                    "checks": {"database": "ok", "redis": "ok", "broker": "ok"}}

    proxy.off()  # refused again, and the API's pooled connections are cut
    body = wait_for_status(api, 503)
    assert body["failed"] == ["database"]
    assert requests.get(api.url + "/healthz", timeout=30).status_code == 200, "still alive"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


def test_readyz_names_redis_and_the_broker_while_redis_is_down(
    own_redis: RedisServer, sqlite_url: str, closing: list[Any],
) -> None:
    api = ApiServer({"DATABASE_URL": sqlite_url, "REDIS_URL": own_redis.url})
    closing.append(api)
    api.start()
    assert wait_for_status(api, 200)["checks"] == {"database": "ok", "redis": "ok",
                                                    "broker": "ok"}
    own_redis.stop()
    body = wait_for_status(api, 503)
    assert body["failed"] == ["redis", "broker"]
    own_redis.start()
    wait_for_status(api, 200)


def test_a_dependency_that_never_answers_is_bounded(
    closing: list[Any],
) -> None:
    """A listener that accepts and then says nothing: the check gives up at its bound (2 s)
    rather than waiting for the driver's own timeout (5 s)."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    closing.append(silent)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{silent.getsockname()[1]}/test"
    api = ApiServer({"DATABASE_URL": url})
    closing.append(api)
    api.start()
    code, body = ready(api)
    assert code == 503
    assert body["failed"] == ["database"]
    assert body["checks"]["database"] == "no answer within 2s"



def test_compose_checks_the_api_with_readyz() -> None:
    compose = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker-compose.yml")
                             .read_text())
    check = " ".join(compose["services"]["api"]["healthcheck"]["test"])
    assert "/readyz" in check
    assert "/healthz" not in check
