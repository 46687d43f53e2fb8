"""Health history: each health report, kept until retention prunes it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflows.models import HealthRecord
from workflows.store.base import StoreBase


class Health(StoreBase):
    """Record health reports."""

    def add_health(self, generated_at: float, healthy: bool, report: Mapping[str, Any]) -> None:
        with self._sessions.begin() as session:
            session.add(HealthRecord(generated_at=generated_at, healthy=healthy,
                                     report=dict(report)))
