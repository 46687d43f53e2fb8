"""The ``relaycast`` command line.

Celery's own CLI stays the way to run processes (``celery -A relaycast worker``, ``beat``,
``flower``); this one is for people: running workflows (``demo``, ``run``, ``workflows``),
inspecting and steering the broadcasters (``status``, ``enable``, ``disable``), reading and
operating the log store (``logs``, ``runs``, ``replay``, ``prune``, ``db``), serving the
API and Socket.IO (``api``, ``socketio``) and trying the alert webhook (``alert test``).
Each group is a module with a ``register(sub)`` that adds its commands, each command naming
its handler.

Exit status: 0 done; 1 the command could not do what it was asked (``status``: degraded
or stale; ``logs``: no such lines; ``logs --follow``: the run failed; ``alert test``: the
webhook did not take the alert; a server it needs is unreachable: nothing was changed); 2 the
command or the configuration is wrong (one line says what); 3 not finished: ``replay`` (or
``replay --dry-run``) had nothing to take but lines are claimed by another replay in
progress (it says how many and until when: run it again after that; ``nothing to replay``
with 0 means nothing is owed and nothing is claimed);
130 interrupted (Ctrl-C). Every error is one line on stderr, never a traceback (with
``RELAYCAST_LOG_FORMAT=json``, one JSON object, as every line the command logs).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from broadcasters.backends import StateUnavailable
from broadcasters.wire import InvalidRunId
from config import ConfigError, load_settings
from relaycast._layout import Shadowed
from relaycast.cli import alerts, control, logs, maintenance, running, servers
from relaycast.cli.common import Parser, Unreachable, UsageError, fail, first_line
from tasks import logformat

__all__ = ["build_parser", "main"]

#: The command groups, in the order ``relaycast --help`` lists them.
GROUPS = (running, logs, control, maintenance, servers, alerts)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="relaycast", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        settings = load_settings()
        logformat.setup_cli(settings)  # RELAYCAST_LOG_LEVEL, as text or JSON (RELAYCAST_LOG_FORMAT)
        status: int = args.handler(settings, args)
        return status
    except BrokenPipeError:
        # The reader went away (`relaycast logs RUN | head -1`): stop quietly, as tools
        # killed by SIGPIPE do; send what is left in stdout's buffer nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (ConfigError, UsageError, InvalidRunId, Shadowed) as exc:
        return fail(str(exc), 2)
    except Unreachable as exc:
        return fail(str(exc), 1)
    except StateUnavailable as exc:
        return fail(f"shared state unreachable at REDIS_URL ({exc})", 1)
    except SQLAlchemyError as exc:
        return fail(f"database unavailable at DATABASE_URL: {first_line(exc)}", 1)
    except KeyboardInterrupt:
        return 130
