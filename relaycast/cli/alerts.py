"""Alerts: ``alert test`` sends one test alert to ``RELAYCAST_ALERT_WEBHOOK_URL``."""

from __future__ import annotations

import argparse
from typing import Any

from config import Settings
from relaycast.cli.common import Unreachable, UsageError


def register(sub: Any) -> None:
    alert = sub.add_parser("alert", help="the alert webhook (RELAYCAST_ALERT_WEBHOOK_URL)")
    commands = alert.add_subparsers(dest="alert_command", required=True, metavar="COMMAND",
                                    parser_class=type(alert))
    test = commands.add_parser("test", help="send one test alert; exit 0 when the webhook "
                               "takes it (2xx), 1 otherwise")
    test.set_defaults(handler=cmd_alert_test)


def cmd_alert_test(settings: Settings, args: argparse.Namespace) -> int:
    """One POST, signed as every alert is, no retry: the answer is the webhook's own."""
    from broadcasters.alert_sink import WebhookSink
    from broadcasters.alerts import trial_alert

    sink = WebhookSink.from_settings(settings)
    if sink is None:
        raise UsageError("alert test needs RELAYCAST_ALERT_WEBHOOK_URL (the URL alerts are "
                         "POSTed to, e.g. a Slack incoming webhook)")
    try:
        delivery = sink.deliver(trial_alert().body(), attempts=1)
    finally:
        sink.close()
    if not delivery.ok:
        raise Unreachable(f"alert webhook {sink.shown_url} did not take the test alert: "
                          f"{delivery.reason}")
    signed = "signed" if settings.alert_secret is not None else "unsigned"
    print(f"test alert sent to {sink.shown_url} ({signed}): HTTP {delivery.status}")
    return 0
