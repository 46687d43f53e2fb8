"""relaycast's servers: ``api`` (HTTP API and viewer) and ``socketio``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from config import Settings
from relaycast.cli.common import UsageError, listen_host, port
from tasks import logformat
from tasks.logformat import notice


def register(sub: Any) -> None:
    api = sub.add_parser("api", help="serve the HTTP API (history, status, Pusher auth)")
    api.add_argument("--host", default=None, help="default 0.0.0.0 with a token, else 127.0.0.1")
    api.add_argument("--port", type=port, default=8000)
    api.set_defaults(handler=cmd_api)

    sio = sub.add_parser("socketio", help="serve Socket.IO on SOCKETIO_MESSAGE_QUEUE (the "
                         "workers' emits reach its clients)")
    sio.add_argument("--host", default=None, help="default 0.0.0.0 with a token, else 127.0.0.1")
    sio.add_argument("--port", type=port, default=None,
                     help="default RELAYCAST_SOCKETIO_PORT (8001)")
    sio.set_defaults(handler=cmd_socketio)


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from relaycast.api.app import create_app

    host = listen_host(settings, args.host, "api")
    if settings.admin_token is not None:
        _print_sign_in_url(host, args.port, settings.admin_token.get_secret_value())
    uvicorn.run(create_app(settings), host=host, port=args.port, log_level="warning",
                **_uvicorn_logging())
    return 0


def cmd_socketio(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from relaycast.api.socketio_server import create_asgi_app

    if settings.socketio_message_queue is None:
        raise UsageError("socketio needs SOCKETIO_MESSAGE_QUEUE (e.g. redis://localhost:6379/0): "
                         "the queue the workers emit to")
    host = listen_host(settings, args.host, "socketio")
    port = args.port or settings.socketio_port
    notice(f"relaycast socketio: listening on {host}:{port}, channel "
           f"{settings.socketio_channel!r} of SOCKETIO_MESSAGE_QUEUE", logger="relaycast.socketio")
    uvicorn.run(create_asgi_app(settings), host=host, port=port, log_level="warning",
                **_uvicorn_logging())
    return 0


def _uvicorn_logging() -> dict[str, Any]:
    """JSON logs: uvicorn configures none of its own, so its loggers reach the root's JSON
    handler (tasks.logformat); text: uvicorn's own format, as before."""
    return {"log_config": None} if logformat.is_json() else {}


def _print_sign_in_url(host: str, port: int, token: str) -> None:
    """The viewer's sign-in link, on stdout (as Jupyter prints its own): it holds the token."""
    from urllib.parse import quote

    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    shown = f"[{shown}]" if ":" in shown else shown
    url = f"http://{shown}:{port}/ui/?token={quote(token, safe='')}"
    if logformat.is_json():
        notice(f"relaycast api: open the viewer (signs this browser in): {url}",
               stream=sys.stdout, logger="relaycast.api")
    else:
        print(f"relaycast api: open the viewer (signs this browser in):\n    {url}", flush=True)
