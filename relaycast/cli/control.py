"""Steering the broadcasters: ``status``, ``enable NAME``, ``disable NAME``."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from broadcasters.backends import StateUnavailable
from config import Settings
from config.durations import format_duration_s
from relaycast.cli.common import broadcaster_name, duration, shared_state, unreachable_state


def register(sub: Any) -> None:
    status = sub.add_parser("status", help="each broadcaster's state; exit 1 when degraded")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)

    enable = sub.add_parser("enable", help="lift a broadcaster's disabled flag for every worker")
    enable.add_argument("name", type=broadcaster_name)
    enable.set_defaults(handler=cmd_enable)

    disable = sub.add_parser("disable", help="stop a broadcaster for every worker")
    disable.add_argument("name", type=broadcaster_name)
    disable.add_argument("--for", dest="for_s", type=duration, default=None, metavar="DURATION",
                         help="e.g. 30m, 1h, 2d (default: until `relaycast enable`)")
    disable.add_argument("--reason", default="disabled by an operator", help="shown in status")
    disable.set_defaults(handler=cmd_disable)


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """The health report, computed from the shared state now.

    Exit 0 when healthy; 1 when degraded, or stale: with Redis configured, no report from
    the health task in the last two intervals means beat (or every worker) is down.
    """
    from broadcasters.factory import build_state
    from broadcasters.status import render_table
    from tasks.reporting import current_report

    report = current_report(settings, build_state(settings))
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=True))
    else:
        print(render_table(report))
    return 0 if report.healthy else 1


def cmd_enable(settings: Settings, args: argparse.Namespace) -> int:
    state = shared_state(settings, "enable")
    try:
        state.enable(args.name)
    except StateUnavailable as exc:
        raise unreachable_state(exc) from None
    print(f"{args.name}: enabled for every worker")
    return 0


def cmd_disable(settings: Settings, args: argparse.Namespace) -> int:
    state = shared_state(settings, "disable")
    until = time.time() + args.for_s if args.for_s else None
    try:
        state.disable(args.name, args.reason, until=until, set_by="relaycast-cli", strict=True)
    except StateUnavailable as exc:
        raise unreachable_state(exc) from None
    span = f"for {format_duration_s(args.for_s)}" if args.for_s else "until `relaycast enable`"
    print(f"{args.name}: disabled for every worker {span} ({args.reason})")
    return 0
