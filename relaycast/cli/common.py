"""What every command shares: the one-line errors, argument types, and small formatting."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, NoReturn

from sqlalchemy.exc import SQLAlchemyError

from broadcasters.backends import StateUnavailable
from broadcasters.state import SharedState
from config import Settings
from config.durations import format_duration_s, parse_duration_s
from config.settings import KNOWN_BROADCASTERS
from tasks.logformat import notice


class UsageError(Exception):
    """A command that cannot run as asked; printed as one line, exit status 2."""


class Unreachable(Exception):
    """A server the command needs did not answer; printed as one line, exit status 1."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (1-65535)")
    return port


def duration(text: str) -> float:
    try:
        return parse_duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def broadcaster_name(text: str) -> str:
    name = text.strip().lower()
    if name not in KNOWN_BROADCASTERS:
        raise argparse.ArgumentTypeError(
            f"unknown broadcaster {text!r} (known: {', '.join(KNOWN_BROADCASTERS)})")
    return name


def level(text: str) -> str:
    from workflows.cleaning import LEVELS

    level = text.strip().lower()
    if level not in LEVELS:
        raise argparse.ArgumentTypeError(f"unknown level {text!r} (known: {', '.join(LEVELS)})")
    return level


def at_or_above(level: str, threshold: str) -> bool:
    from workflows.cleaning import LEVELS

    rank = LEVELS.index(level) if level in LEVELS else LEVELS.index("info")
    return rank >= LEVELS.index(threshold)


def seq(text: str) -> int:
    try:
        seq = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a line number: {text!r}") from None
    if not 0 <= seq < 2**31:
        raise argparse.ArgumentTypeError(f"{seq} is not a line number (0 to {2**31 - 1})")
    return seq


def param(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected K=V with K a name, got {text!r}")
    try:
        value: object = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def count(low: int, high: int, what: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of {what}: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} {what} is out of range ({low}-{high:,})")
        return value

    return parse


def utc(epoch_ms: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration_text(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else format_duration_s(seconds)


def shared_state(settings: Settings, command: str) -> SharedState:
    from broadcasters.factory import build_state

    if not settings.redis_url:
        raise UsageError(f"{command} needs REDIS_URL: without Redis, flags live in one process only")
    return build_state(settings)


def unreachable_state(exc: StateUnavailable) -> Unreachable:
    return Unreachable(f"shared state unreachable at REDIS_URL ({exc}): nothing was changed")


def listen_host(settings: Settings, host: str | None, what: str) -> str:
    """Where a server of ours may listen: anywhere with a token, loopback only without."""
    if settings.admin_token is None:
        if host not in (None, "127.0.0.1", "localhost", "::1"):
            raise UsageError(f"without RELAYCAST_ADMIN_TOKEN {what} serves loopback only; "
                             "set a token to listen on " + str(host))
        notice(f"relaycast {what}: RELAYCAST_ADMIN_TOKEN is not set: listening on loopback only, "
               "no authentication", level=logging.WARNING, logger=f"relaycast.{what}")
        return host or "127.0.0.1"
    return host or "0.0.0.0"  # noqa: S104 - token-protected


def first_line(exc: SQLAlchemyError) -> str:
    """The driver's own first line (not SQLAlchemy's wrapper text)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def fail(message: str, status: int) -> int:
    notice(f"relaycast: {message}", level=logging.ERROR, logger="relaycast.cli")
    return status
