"""The ``relaycast`` command line.

Celery's own CLI stays the way to run processes (``celery -A tasks worker``, ``beat``,
``flower``); this one is for people: inspecting and steering the broadcasters.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence

import redis

from config import ConfigError, Settings, load_settings
from config.durations import format_duration_s, parse_duration_s
from config.settings import KNOWN_BROADCASTERS


class UsageError(Exception):
    """A command that cannot run as asked; printed as one line, exit status 2."""


def _duration(text: str) -> float:
    try:
        return parse_duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _broadcaster_name(text: str) -> str:
    name = text.strip().lower()
    if name not in KNOWN_BROADCASTERS:
        raise argparse.ArgumentTypeError(
            f"unknown broadcaster {text!r} (known: {', '.join(KNOWN_BROADCASTERS)})")
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relaycast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = sub.add_parser("status", help="each broadcaster's state; exit 1 when degraded")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    enable = sub.add_parser("enable", help="lift a broadcaster's disabled flag for every worker")
    enable.add_argument("name", type=_broadcaster_name)

    disable = sub.add_parser("disable", help="stop a broadcaster for every worker")
    disable.add_argument("name", type=_broadcaster_name)
    disable.add_argument("--for", dest="for_s", type=_duration, default=None, metavar="DURATION",
                         help="e.g. 30m, 1h, 2d (default: until `relaycast enable`)")
    disable.add_argument("--reason", default="disabled by an operator", help="shown in status")
    return parser


def _shared_state(settings: Settings, command: str) -> object:
    from broadcasters.factory import build_state

    if not settings.redis_url:
        raise UsageError(f"{command} needs REDIS_URL: without Redis, flags live in one process only")
    return build_state(settings)


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from broadcasters.factory import build_state
    from broadcasters.status import render_table, snapshot, to_json

    snap = snapshot(settings, build_state(settings))
    if args.json:
        print(json.dumps(to_json(snap), indent=2, sort_keys=True))
    else:
        print(render_table(snap))
    return 0 if snap.healthy else 1


def cmd_enable(settings: Settings, args: argparse.Namespace) -> int:
    from broadcasters.state import SharedState

    state = _shared_state(settings, "enable")
    assert isinstance(state, SharedState)
    state.enable(args.name)
    print(f"{args.name}: enabled for every worker")
    return 0


def cmd_disable(settings: Settings, args: argparse.Namespace) -> int:
    from broadcasters.state import SharedState

    state = _shared_state(settings, "disable")
    assert isinstance(state, SharedState)
    until = time.time() + args.for_s if args.for_s else None
    state.disable(args.name, args.reason, until=until, set_by="relaycast-cli")
    span = f"for {format_duration_s(args.for_s)}" if args.for_s else "until `relaycast enable`"
    print(f"{args.name}: disabled for every worker {span} ({args.reason})")
    return 0


COMMANDS = {"status": cmd_status, "enable": cmd_enable, "disable": cmd_disable}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return COMMANDS[args.command](settings, args)
    except ConfigError as exc:
        print(f"relaycast: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"relaycast: {exc}", file=sys.stderr)
        return 2
    except (redis.RedisError, OSError) as exc:
        print(f"relaycast: shared state unreachable: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
