"""``relaycast socketio``: a Socket.IO server on the same message queue the workers emit to.

python-socketio's ``AsyncServer`` (ASGI, on uvicorn) with an ``AsyncRedisManager`` on
``SOCKETIO_MESSAGE_QUEUE`` / ``SOCKETIO_CHANNEL``: every server process listening there
delivers every emit to its own clients, so several processes (on several hosts) behind one
queue scale past one machine; a client may connect to any of them.

The protocol, for the viewer's client and for Socket.IO front ends being migrated:

* connect with ``auth: {"token": <RELAYCAST_ADMIN_TOKEN>}``, or with the viewer's session
  cookie (same site: browsers send it on the WebSocket handshake); without a token
  configured the server listens on loopback only;
* a browser's ``Origin`` (on the polling handshake and the WebSocket upgrade alike) must be
  one of ``RELAYCAST_ALLOWED_ORIGINS``, or, with a token, a page of the host this server is
  reached on (the viewer served by ``relaycast api`` beside it, on any port), or, without a
  token, a loopback page. Any other origin is refused with 400 and gets no CORS headers, so
  no other site can use a signed-in browser's session. Clients that send no ``Origin``
  (scripts, other servers) are not browsers and are let through to the token check;
* emit ``subscribe`` with ``{"channel": name}``: the ack is ``{"ok": true}`` or
  ``{"ok": false, "error": …}``; relaycast's own channels (a run's logs, admin events,
  admin health) and application channels (``{prefix}{name}``: ``relaycast.broadcast``);
  ``unsubscribe`` likewise. A name over Pusher's 164 characters
  (:data:`broadcasters.wire.MAX_CHANNEL_CHARS`) is refused without being repeated, and a
  connection holds at most :data:`MAX_SUBSCRIPTIONS` channels (refused beyond, until it
  unsubscribes). A message over :data:`MAX_MESSAGE_BYTES` closes the connection. A
  connection is the admin's (token or session), so ``RELAYCAST_CHANNEL_AUTHORIZER``, which
  decides for others, is not asked here;
* then the events of that channel arrive as relaycast sends them to Pusher: ``log`` with
  ``{"run_id", "events": [...]}``, ``started``/``finished``/``failed``, ``provider-changed``,
  ``health``. A socket subscribed to several channels gets each channel's events; clients
  that need to tell them apart use one socket per channel (as the viewer's client does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import socketio

from broadcasters.wire import Channels, channel_name_problem, shown_channel
from config import Settings
from config.origins import normalised_origin
from relaycast.api.auth import SESSION_COOKIE, Auth

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: Channels one connection may be subscribed to at once.
MAX_SUBSCRIPTIONS = 100
#: The largest message a client may send (a subscribe is well under 1 KB); engine.io closes
#: a connection that sends more, and refuses a polling POST that declares more.
MAX_MESSAGE_BYTES = 64 * 1024


def _request_host(environ: Any) -> str | None:
    """The host name (no port) the request was addressed to: its ``Host`` header."""
    host = environ.get("HTTP_HOST") if isinstance(environ, dict) else None
    if not host:
        return None
    try:
        return urlsplit(f"//{host}").hostname
    except ValueError:
        return None


def origin_policy(allowed: frozenset[str], *, token: bool) -> Callable[[str | None, Any], bool]:
    """python-socketio's ``cors_allowed_origins``: may a page of ``origin`` connect?

    A WebSocket is not covered by the same-origin policy, and engine.io's polling answers
    carry ``Access-Control-Allow-Credentials``: without this check any site open in a browser
    could connect with that browser's session cookie, or, without a token, to a loopback
    server. Accepted: the origins in ``allowed`` (``RELAYCAST_ALLOWED_ORIGINS``); with a
    token, a page of the host the request is addressed to (the viewer, served by ``relaycast
    api`` beside this server, on its own port); without a token, loopback pages only (a
    same-host rule would let a DNS-rebound site in).
    """

    def accepted(origin: str | None, environ: Any = None) -> bool:
        if origin is None:
            return True  # not a browser: the token check decides
        key = normalised_origin(origin)
        if key is None:
            return False  # "null" (sandboxed pages, file://) and anything else unparseable
        if key in allowed:
            return True
        host = urlsplit(key).hostname
        if not token:
            return host in LOOPBACK_HOSTS
        return host is not None and host == _request_host(environ)

    return accepted


def _cookie(environ: dict[str, Any], name: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(environ.get("HTTP_COOKIE", ""))
    except Exception:  # noqa: BLE001 - a malformed cookie header is no session
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def client_manager(settings: Settings) -> Any:
    url = settings.socketio_message_queue
    if url is None:
        raise ValueError("SOCKETIO_MESSAGE_QUEUE: is required for relaycast socketio")
    if url.startswith(("redis://", "rediss://", "unix://")):
        return socketio.AsyncRedisManager(url, channel=settings.socketio_channel)
    return socketio.AsyncAioPikaManager(url, channel=settings.socketio_channel)


def create_server(settings: Settings, manager: Any = None) -> socketio.AsyncServer:
    auth = Auth.for_settings(settings)
    channels = Channels(settings.channel_prefix)
    server = socketio.AsyncServer(
        async_mode="asgi", client_manager=manager or client_manager(settings),
        cors_allowed_origins=origin_policy(frozenset(settings.allowed_origins),
                                           token=auth.enabled),
        max_http_buffer_size=MAX_MESSAGE_BYTES, logger=False, engineio_logger=False)

    @server.event
    async def connect(sid: str, environ: dict[str, Any], data: Any = None) -> bool:
        given = data.get("token") if isinstance(data, dict) else None
        if given is not None:
            allowed = auth.token_ok(given)
        else:
            allowed = auth.session_ok(_cookie(environ, SESSION_COOKIE))
        if allowed:
            return True
        logger.info("socket.io connection refused: no valid token or session")
        raise socketio.exceptions.ConnectionRefusedError("unauthorised: a token or a session "
                                                         "is needed")

    @server.event
    async def subscribe(sid: str, data: Any = None) -> dict[str, Any]:
        channel = data.get("channel") if isinstance(data, dict) else None
        problem = channel_name_problem(channel)
        if problem is not None:
            logger.info("socket.io subscribe refused: %s (%s)", problem, shown_channel(channel))
            return {"ok": False, "error": problem}
        assert isinstance(channel, str)
        if not (channels.is_ours(channel) or channels.app_name_of(channel) is not None):
            return {"ok": False, "error": f"not a relaycast channel: {shown_channel(channel)}"}
        held = [room for room in server.rooms(sid) if room != sid]
        if channel not in held and len(held) >= MAX_SUBSCRIPTIONS:
            logger.info("socket.io subscribe refused: %s already holds %d channels", sid,
                        len(held))
            return {"ok": False, "error": f"at most {MAX_SUBSCRIPTIONS} subscriptions per "
                    "connection: unsubscribe from one first"}
        await server.enter_room(sid, channel)
        return {"ok": True, "channel": channel}

    @server.event
    async def unsubscribe(sid: str, data: Any = None) -> dict[str, Any]:
        channel = data.get("channel") if isinstance(data, dict) else None
        problem = channel_name_problem(channel)
        if problem is not None:
            return {"ok": False, "error": problem}
        await server.leave_room(sid, channel)
        return {"ok": True}

    return server


def create_asgi_app(settings: Settings) -> Any:
    async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Everything that is not Socket.IO: ``/healthz`` for supervisors, else 404."""
        if scope["type"] != "http":
            return
        ok = scope.get("path") == "/healthz"
        body = b'{"ok":true}' if ok else b'{"detail":"not found"}'
        await send({"type": "http.response.start", "status": 200 if ok else 404,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return socketio.ASGIApp(create_server(settings), other_asgi_app=health)
