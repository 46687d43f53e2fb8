"""Celery tasks: ``celery -A relaycast worker -Q broadcast,workflows`` (or ``-A tasks``),
``celery -A relaycast beat``.

``tasks.app`` is the Celery app, built on first access (PEP 562), so that importing a
module of this package that does not need it (``tasks.reporting``, used by the API and
``relaycast status``) never builds it, and a bad broker URL stops only what needs a broker.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from tasks.celery_app import app

        return app
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
