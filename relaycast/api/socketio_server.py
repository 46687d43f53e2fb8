"""``relaycast socketio``: a Socket.IO server on the same message queue the workers emit to.

python-socketio's ``AsyncServer`` (ASGI, on uvicorn) with an ``AsyncRedisManager`` on
``SOCKETIO_MESSAGE_QUEUE`` / ``SOCKETIO_CHANNEL``: every server process listening there
delivers every emit to its own clients, so several processes (on several hosts) behind one
queue scale past one machine; a client may connect to any of them.

The protocol, for the viewer's client and for Socket.IO front ends being migrated:

* connect with ``auth: {"token": <RELAYCAST_ADMIN_TOKEN>}``, or with the viewer's session
  cookie (same site: browsers send it on the WebSocket handshake); without a token
  configured the server listens on loopback only and accepts only loopback origins;
* emit ``subscribe`` with ``{"channel": name}``: the ack is ``{"ok": true}`` or
  ``{"ok": false, "error": …}``; relaycast's own channels (a run's logs, admin events,
  admin health) and application channels (``{prefix}{name}``: ``relaycast.broadcast``);
  ``unsubscribe`` likewise. A connection is the admin's (token or session), so
  ``RELAYCAST_CHANNEL_AUTHORIZER``, which decides for others, is not asked here;
* then the events of that channel arrive as relaycast sends them to Pusher: ``log`` with
  ``{"run_id", "events": [...]}``, ``started``/``finished``/``failed``, ``provider-changed``,
  ``health``. A socket subscribed to several channels gets each channel's events; clients
  that need to tell them apart use one socket per channel (as the viewer's client does).
"""

from __future__ import annotations

import logging
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlparse

import socketio

from broadcasters.wire import Channels
from config import Settings
from relaycast.api.auth import SESSION_COOKIE, Auth

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _loopback_origin(origin: str | None, _environ: Any = None) -> bool:
    """Without a token, only pages served from this machine (or no page at all) may connect:
    a WebSocket is not covered by the same-origin policy, so any site open in a browser on
    this machine could otherwise read the logs."""
    if origin is None:
        return True
    return (urlparse(origin).hostname or "") in LOOPBACK_HOSTS


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
        cors_allowed_origins="*" if auth.enabled else _loopback_origin,
        logger=False, engineio_logger=False)

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
        if not isinstance(channel, str) or not (channels.is_ours(channel)
                                                or channels.app_name_of(channel) is not None):
            return {"ok": False, "error": f"not a relaycast channel: {channel!r}"}
        await server.enter_room(sid, channel)
        return {"ok": True, "channel": channel}

    @server.event
    async def unsubscribe(sid: str, data: Any = None) -> dict[str, Any]:
        channel = data.get("channel") if isinstance(data, dict) else None
        if isinstance(channel, str):
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
