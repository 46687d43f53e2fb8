"""Alerts: one POST to ``RELAYCAST_ALERT_WEBHOOK_URL`` per change an operator must hear of.

Beat's health task (``tasks/health.py``) hands every report it builds to :func:`notify`,
which alerts on these transitions (:class:`AlertKind`):

=========================  =====================================================================
kind                       when
=========================  =====================================================================
``health_degraded``        the report has problems (``relaycast status`` would exit 1)
``health_recovered``       it has none again
``broadcaster_disabled``   a broadcaster is disabled (quota spent, credentials rejected, an
                           operator); a pause after a rate limit (seconds) is not a change
``broadcaster_enabled``    it is enabled again (``relaycast enable``, the quota reset, the
                           flag's end)
``quota_warning``          today's usage of a provider with a quota crossed 80 %
``quota_exhausted``        it crossed 100 %
=========================  =====================================================================

**Once per transition, across every worker.** Each subject (the health, each broadcaster,
each provider's quota of the day) has its state as last observed in the shared state
(:mod:`broadcasters.keys`, ``alert:*``, stamped with the report's time). A report advances
them all in one atomic step (:meth:`~broadcasters.state.SharedState.advance`): an older
observation never overwrites a newer one, and of several health tasks observing one change
(two workers, a slow one and the next interval's) exactly one is told the state changed, and
only that one sends the alert. A subject's first observation is compared with its normal
state (healthy, enabled, under 80 %): a deployment that starts degraded says so once. With
the shared state unreachable nothing is decided and nothing is sent (the next report that
reaches it decides). The quota's levels are kept per UTC day and only rising levels alert
(the reset at midnight is not an incident). Keys are refreshed by every report and expire a
week after the last (two days for the quota).

**Body**: Slack-compatible: ``{"text": "<a sentence>", "relaycast": {"kind", "id", "at",
"from", "to", ...}}`` (``id``: the same for every retry of one alert, for receivers that
de-duplicate; ``at``: when the report observed the change, ISO 8601 UTC). The POST, its
signature, timeouts and retries: :mod:`broadcasters.alert_sink`. Alerts of one report share
one deadline (:func:`alert_deadline_s`), so a dead sink holds the health task for a bounded
time; an alert given up is logged at ERROR and counted (``alerts_failed`` in the report's
pipeline, a warning of the next report, never a problem: a dead sink must not alert).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from broadcasters import keys
from broadcasters.alert_sink import Delivery, WebhookSink
from broadcasters.clock import utc_day
from broadcasters.flags import OPEN_ENDED_FLAG_TTL_S, BroadcasterState, worker_identity
from broadcasters.state import SharedState
from broadcasters.status import QUOTA_WARNING_FRACTION, BroadcasterHealth, HealthReport
from config import Settings

logger = logging.getLogger(__name__)

__all__ = ["Alert", "AlertKind", "alert_deadline_s", "notify", "observe", "send", "transitions",
           "trial_alert"]

#: The states a subject is in; the first of each is its normal state.
HEALTHY, DEGRADED = "healthy", "degraded"
ENABLED, DISABLED = str(BroadcasterState.ENABLED), str(BroadcasterState.DISABLED)
#: Quota levels: under 80 %, from 80 %, from 100 % (the percentages crossed).
QUOTA_LEVELS = ("0", "80", "100")
#: How long an observation is kept after the last report that refreshed it.
OBSERVATION_TTL_S = OPEN_ENDED_FLAG_TTL_S
QUOTA_OBSERVATION_TTL_S = 2 * 86_400.0


class AlertKind(StrEnum):
    HEALTH_DEGRADED = "health_degraded"
    HEALTH_RECOVERED = "health_recovered"
    BROADCASTER_DISABLED = "broadcaster_disabled"
    BROADCASTER_ENABLED = "broadcaster_enabled"
    QUOTA_WARNING = "quota_warning"
    QUOTA_EXHAUSTED = "quota_exhausted"
    #: ``relaycast alert test``.
    TEST = "test"


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    text: str
    #: When the change was observed (epoch seconds).
    at: float
    #: The structured fields besides ``kind``, ``id`` and ``at`` (``from``, ``to``, ...).
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        subject = self.fields.get("broadcaster") or "relaycast"
        return f"{self.kind}:{subject}:{int(self.at * 1000)}"

    def payload(self) -> dict[str, Any]:
        return {"text": self.text,
                "relaycast": {"kind": str(self.kind), "id": self.id, "at": _iso(self.at),
                              **self.fields}}

    def body(self) -> bytes:
        return json.dumps(self.payload(), ensure_ascii=False, sort_keys=True).encode()


# What a report says -------------------------------------------------------------------------------

def quota_level(row: BroadcasterHealth) -> str | None:
    """``0``, ``80`` or ``100``: the highest share of today's quota ``row`` has crossed (None:
    no quota)."""
    if row.quota_used_fraction is None:
        return None
    if row.quota_used_fraction >= 1.0:
        return "100"
    return "80" if row.quota_used_fraction >= QUOTA_WARNING_FRACTION else "0"


def observe(report: HealthReport) -> dict[str, str]:
    """Every subject's state in ``report``, by its key (:mod:`broadcasters.keys`)."""
    day = utc_day(report.generated_at)
    states = {keys.ALERT_HEALTH: DEGRADED if report.problems else HEALTHY}
    for row in report.broadcasters:
        # A pause (seconds, after a rate limit) is not a change of state worth a message.
        states[keys.alert_broadcaster(row.name)] = (
            DISABLED if row.state is BroadcasterState.DISABLED else ENABLED)
        level = quota_level(row)
        if level is not None:
            states[keys.alert_quota(row.name, day)] = level
    return states


def _normal(key: str) -> str:
    if key == keys.ALERT_HEALTH:
        return HEALTHY
    return QUOTA_LEVELS[0] if key.startswith(keys.ALERT_QUOTA) else ENABLED


def transitions(report: HealthReport, state: SharedState) -> list[Alert]:
    """The alerts ``report`` calls for, decided in the shared state (see the module
    docstring): the changes this call was first to record."""
    observed = observe(report)
    day = utc_day(report.generated_at)
    quota_keys = {keys.alert_quota(row.name, day) for row in report.broadcasters}
    plain = {k: v for k, v in observed.items() if k not in quota_keys}
    quotas = {k: v for k, v in observed.items() if k in quota_keys}
    changed: dict[str, str | None] = {}
    for group, ttl_s in ((plain, OBSERVATION_TTL_S), (quotas, QUOTA_OBSERVATION_TTL_S)):
        if group:
            advanced = state.advance(group, report.generated_at, ttl_s)
            if advanced is None:
                logger.warning("alerts: shared state unreachable, no alert decided for the "
                               "report of %s", _iso(report.generated_at))
                return []
            changed.update(advanced)
    alerts: list[Alert] = []
    rows = {row.name: row for row in report.broadcasters}
    for key, previous in changed.items():
        before = previous if previous is not None else _normal(key)
        now = observed[key]
        if before == now:
            continue
        if key == keys.ALERT_HEALTH:
            alerts.append(_health_alert(report, before, now))
        elif key in quota_keys:
            name = next(n for n in rows if keys.alert_quota(n, day) == key)
            if QUOTA_LEVELS.index(now) > QUOTA_LEVELS.index(before):
                alerts.append(_quota_alert(report, rows[name], before, now))
        else:
            name = next(n for n in rows if keys.alert_broadcaster(n) == key)
            alerts.append(_broadcaster_alert(report, rows[name], before, now))
    order = list(AlertKind)
    return sorted(alerts, key=lambda a: order.index(a.kind))


def _health_alert(report: HealthReport, before: str, now: str) -> Alert:
    fields: dict[str, Any] = {"from": before, "to": now, "problems": list(report.problems),
                              "warnings": list(report.warnings),
                              "active_broadcaster": report.active_broadcaster}
    if now == DEGRADED:
        text = "relaycast is degraded: " + "; ".join(report.problems)
        return Alert(AlertKind.HEALTH_DEGRADED, text, report.generated_at, fields)
    return Alert(AlertKind.HEALTH_RECOVERED, "relaycast is healthy again", report.generated_at,
                 fields)


def _broadcaster_alert(report: HealthReport, row: BroadcasterHealth, before: str, now: str
                       ) -> Alert:
    fields: dict[str, Any] = {"broadcaster": row.name, "from": before, "to": now,
                              "active_broadcaster": report.active_broadcaster}
    if now == DISABLED:
        fields.update(reason=row.reason, cause=row.cause, until=_iso(row.until),
                      set_by=row.set_by)
        until = f"until {_when(row.until)}" if row.until else "until `relaycast enable`"
        carrier = (f"; traffic is on {report.active_broadcaster}"
                   if report.active_broadcaster and report.active_broadcaster != row.name else "")
        text = f"relaycast: {row.name} is disabled ({row.reason}) {until}{carrier}"
        return Alert(AlertKind.BROADCASTER_DISABLED, text, report.generated_at, fields)
    return Alert(AlertKind.BROADCASTER_ENABLED, f"relaycast: {row.name} is enabled again",
                 report.generated_at, fields)


def _quota_alert(report: HealthReport, row: BroadcasterHealth, before: str, now: str) -> Alert:
    fields: dict[str, Any] = {
        "broadcaster": row.name, "from": f"{before}%", "to": f"{now}%",
        "usage_today": row.usage_today, "daily_quota": row.daily_quota,
        "quota_used_fraction": row.quota_used_fraction,
        "quota_exhausted_at": _iso(row.quota_exhausted_at)}
    used = f"{row.usage_today:,}/{row.daily_quota:,} messages today"
    if now == "100":
        text = (f"relaycast: {row.name} has used all of its daily quota ({used}); expect it to "
                "refuse messages until the quota resets at midnight UTC")
        return Alert(AlertKind.QUOTA_EXHAUSTED, text, report.generated_at, fields)
    runs_out = (f"at the current rate it runs out at {_when(row.quota_exhausted_at)}"
                if row.quota_exhausted_at else "at the current rate it lasts the day")
    text = (f"relaycast: {row.name} has used {row.quota_used_fraction or 0:.0%} of its daily "
            f"quota ({used}); {runs_out}")
    return Alert(AlertKind.QUOTA_WARNING, text, report.generated_at, fields)


def trial_alert(now: float | None = None) -> Alert:
    """What ``relaycast alert test`` sends."""
    at = time.time() if now is None else now
    return Alert(AlertKind.TEST, f"relaycast: test alert from {worker_identity()}: alerts "
                 "reach this webhook", at, {"source": worker_identity()})


# Sending ---------------------------------------------------------------------------------------

def alert_deadline_s(settings: Settings) -> float:
    """How long one report's alerts may take in all: three provider timeouts and the backoff
    between them (about 17 s by default), so a dead sink never holds the health task long."""
    return 3 * settings.provider_timeout_s + 2.0


def send(alerts: Sequence[Alert], sink: WebhookSink, state: SharedState | None = None, *,
         deadline_s: float) -> list[Delivery]:
    """Deliver ``alerts`` in order within ``deadline_s`` in all; never raises. Each outcome is
    logged and counted (``alerts_sent`` / ``alerts_failed``)."""
    deadline = time.monotonic() + deadline_s
    deliveries = []
    for alert in alerts:
        try:
            delivery = sink.deliver(alert.body(), deadline=deadline)
        except Exception as exc:  # noqa: BLE001 - an alert never breaks the health task
            delivery = Delivery(False, 0, reason=f"{type(exc).__name__}")
        deliveries.append(delivery)
        if delivery.ok:
            logger.info("alert sent (%s): %s", alert.kind, alert.text,
                        extra=_extra(alert))
        else:
            logger.error("alert NOT sent to %s after %d attempt(s) (%s): %s: %s",
                         sink.shown_url, delivery.attempts, delivery.reason, alert.kind,
                         alert.text, extra=_extra(alert))
    if state is not None:
        sent = sum(1 for d in deliveries if d.ok)
        state.count_pipeline({keys.PipelineCounter.ALERTS_SENT: sent,
                              keys.PipelineCounter.ALERTS_FAILED: len(deliveries) - sent})
    return deliveries


def notify(settings: Settings, state: SharedState, report: HealthReport, *,
           sink: WebhookSink | None = None) -> list[Alert]:
    """Alert on what changed since the last report (see the module docstring): the alerts
    this call sent or tried to send. Never raises; returns at once when alerts are off."""
    own = sink is None
    try:
        sink = sink or WebhookSink.from_settings(settings)
        if sink is None:
            return []
        alerts = transitions(report, state)
        if alerts:
            send(alerts, sink, state, deadline_s=alert_deadline_s(settings))
        return alerts
    except Exception:
        logger.exception("alerts: could not decide or send the alerts of this report")
        return []
    finally:
        if own and sink is not None:
            sink.close()


def _extra(alert: Alert) -> dict[str, Any]:
    broadcaster = alert.fields.get("broadcaster")
    return {"broadcaster": broadcaster} if broadcaster else {}


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime(
        "%Y-%m-%d %H:%M:%SZ")
