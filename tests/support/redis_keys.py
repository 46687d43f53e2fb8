"""Emptying a test's own key prefix on a shared redis-server."""

from __future__ import annotations

from broadcasters.backends import RedisBackend


def delete_prefixed(backend: RedisBackend) -> None:
    """Delete every key under ``backend.prefix`` (the keys one test wrote)."""
    keys = list(backend.client.scan_iter(match=f"{backend.prefix}*", count=500))
    if keys:
        backend.client.delete(*keys)
