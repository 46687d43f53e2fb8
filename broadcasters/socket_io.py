"""Socket.IO through python-socketio's write-only client manager.

The library's own way to emit from a process that is not the Socket.IO server: the manager
publishes each emit on a message queue (``SOCKETIO_MESSAGE_QUEUE``: Redis, or AMQP through
kombu) under a channel (``SOCKETIO_CHANNEL``), and every server listening there
(``relaycast socketio``, or a team's existing python-socketio server) delivers it to the
clients in the room. relaycast emits what it sends to Pusher — event ``log`` with
``{"run_id", "events"}``, admin events, ``provider-changed`` — to a room named exactly like
the relaycast channel.

Two things the library's managers do that a broadcaster cannot accept, and that these
thin subclasses change (``_publish`` is the method python-socketio's pub/sub managers are
built to have overridden):

* a failed publish is logged and dropped ("giving up"): here it raises, so the manager
  classifies it (transient) and the line is retried or taken by the next broadcaster;
* with Redis, a publish that no server received (``PUBLISH`` answered 0: every Socket.IO
  server is down or restarting) is lost: here it is a failure too, so the lines are retried
  until a server listens again (the viewer polls the history meanwhile).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Self

import socketio

from broadcasters.base import Broadcaster, Message
from config import Settings


class NoServerListening(Exception):
    """The message queue took the message, but no Socket.IO server was there to get it."""


class _RedisManager(socketio.RedisManager):  # type: ignore[misc]
    connected: bool

    def _publish(self, data: Any) -> int:
        if not self.connected:
            self._redis_connect()
        try:
            receivers = int(self.redis.publish(self.channel, self.json.dumps(data)))
        except Exception:
            self.connected = False  # reconnect on the next publish
            raise
        if receivers == 0:
            raise NoServerListening(f"no Socket.IO server listens on channel {self.channel!r}")
        return receivers


class _KombuManager(socketio.KombuManager):  # type: ignore[misc]
    def _publish(self, data: Any) -> None:
        self._producer_publish(self.publisher_connection)(self.json.dumps(data))


def write_only_manager(url: str, channel: str) -> Any:
    """A python-socketio write-only manager for ``url`` (Redis or AMQP) that raises."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _RedisManager(url, channel=channel, write_only=True,
                             redis_options={"socket_timeout": 2, "socket_connect_timeout": 2})
    return _KombuManager(url, channel=channel, write_only=True,
                         connection_options={"connect_timeout": 2})


class SocketIOBroadcaster(Broadcaster):
    name = "socketio"
    #: Redis pub/sub and AMQP carry large messages; keep each one to a size browsers like.
    max_message_bytes = 512 * 1024
    max_batch = 100

    def __init__(self, manager: Any) -> None:
        self.manager = manager

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        assert settings.socketio_message_queue is not None
        return cls(write_only_manager(settings.socketio_message_queue, settings.socketio_channel))

    def _publish(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.manager.emit(message.event, json.loads(message.payload), room=message.channel,
                              namespace="/")

    def close(self) -> None:
        redis_client = getattr(self.manager, "redis", None)
        if redis_client is not None:
            redis_client.close()
