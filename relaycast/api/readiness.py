"""``GET /readyz``: can this API serve right now? (``/healthz`` only says the process is up.)

The database, Redis (when ``REDIS_URL`` is set) and the broker (when one is configured) are
asked at once, each bounded by :data:`CHECK_TIMEOUT_S`: 200 when all answer, else 503 with
what failed. A check runs in a thread, so one whose driver ignores its own timeout only
delays its thread, never the answer. What failed is named with the exception's class only,
never its message (an address or a user name has no business on an unauthenticated page).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis
from sqlalchemy import text

from config import Settings
from tasks.reporting import queue_depth
from workflows.store import store_for

#: How long each dependency may take to answer.
CHECK_TIMEOUT_S = 2.0


def _database(settings: Settings) -> None:
    with store_for(settings.database_url_or_default).engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=CHECK_TIMEOUT_S,
                                  socket_connect_timeout=CHECK_TIMEOUT_S)
    try:
        client.ping()
    finally:
        client.close()


def checks(settings: Settings) -> dict[str, Callable[[], object]]:
    """The dependencies to ask, by name."""
    wanted: dict[str, Callable[[], object]] = {"database": lambda: _database(settings)}
    if settings.redis_url:
        url = settings.redis_url
        wanted["redis"] = lambda: _redis(url)
    broker = settings.broker_url
    if broker and not broker.startswith("memory://"):
        wanted["broker"] = lambda: queue_depth(broker)
    return wanted


async def _answer(check: Callable[[], object], timeout_s: float) -> str:
    try:
        await asyncio.wait_for(asyncio.to_thread(check), timeout_s)
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"unreachable: {type(exc).__name__}"
    return "ok"


async def readiness(settings: Settings, timeout_s: float = CHECK_TIMEOUT_S
                    ) -> tuple[bool, dict[str, object]]:
    """(ready?, the JSON body): every check's answer, and the names of those that failed."""
    wanted = checks(settings)
    answers = await asyncio.gather(*(_answer(check, timeout_s) for check in wanted.values()))
    results = dict(zip(wanted, answers, strict=True))
    failed = [name for name, answer in results.items() if answer != "ok"]
    return not failed, {"ready": not failed, "failed": failed, "checks": results}
