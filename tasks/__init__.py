"""Celery tasks: ``celery -A tasks worker -Q broadcast,workflows``, ``celery -A tasks beat``."""

from tasks.app import app

__all__ = ["app"]
