"""The live providers' settings: Pusher, Ably and Socket.IO, their fields and checks.

Most of their variables keep the names the providers' users already have (``PUSHER_*``,
``ABLY_*``, ``SOCKETIO_*``, see :mod:`config.naming`); the rest are relaycast's own
(``RELAYCAST_PUSHER_MAX_EVENT_BYTES``, ``RELAYCAST_MIRROR``, ``RELAYCAST_SOCKETIO_PORT``).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, SecretStr, field_validator

from config.naming import contract_name
from config.urls import SOCKETIO_QUEUE_SCHEMES, url_with_scheme

PROVIDERS = ("pusher", "ably", "socketio")
#: What each provider needs set before it can be listed.
PROVIDER_NEEDS = {"pusher": "PUSHER_APP_ID, PUSHER_KEY, PUSHER_SECRET", "ably": "ABLY_API_KEY",
                  "socketio": "SOCKETIO_MESSAGE_QUEUE"}
_APP_ID = re.compile(r"^\d+$")
#: The cluster Pusher's own libraries use when none is given.
PUSHER_DEFAULT_CLUSTER = "mt1"


class PusherSettings(BaseModel):
    """Pusher Channels (or any Pusher-protocol server such as soketi)."""

    pusher_app_id: str | None = Field(None, validation_alias=contract_name("PUSHER_APP_ID"))
    pusher_key: str | None = Field(None, validation_alias=contract_name("PUSHER_KEY"))
    pusher_secret: SecretStr | None = Field(None, validation_alias=contract_name("PUSHER_SECRET"))
    pusher_cluster: str | None = Field(None, validation_alias=contract_name("PUSHER_CLUSTER"))
    pusher_host: str | None = Field(None, validation_alias=contract_name("PUSHER_HOST"))
    pusher_port: int | None = Field(None, ge=1, le=65535, validation_alias=contract_name("PUSHER_PORT"))
    pusher_ssl: bool = Field(True, validation_alias=contract_name("PUSHER_SSL"))
    pusher_max_event_bytes: int = Field(10_000, ge=256, le=10_240)

    @property
    def pusher_cluster_or_default(self) -> str:
        """``PUSHER_CLUSTER``, else Pusher's default cluster (``mt1``)."""
        return self.pusher_cluster or PUSHER_DEFAULT_CLUSTER

    @field_validator("pusher_app_id")
    @classmethod
    def _app_id_digits(cls, value: str | None) -> str | None:
        if value is not None and not _APP_ID.match(value):
            raise ValueError("must be the numeric app id")
        return value


class AblySettings(BaseModel):
    """Ably (fallback)."""

    ably_api_key: SecretStr | None = Field(None, validation_alias=contract_name("ABLY_API_KEY"))
    ably_rest_host: str | None = Field(None, validation_alias=contract_name("ABLY_REST_HOST"))
    ably_rest_port: int | None = Field(
        None, ge=1, le=65535, validation_alias=contract_name("ABLY_REST_PORT"))
    ably_tls: bool = Field(True, validation_alias=contract_name("ABLY_TLS"))


class SocketIOSettings(BaseModel):
    """Socket.IO (a self-hosted, quota-free live transport, and the migration path)."""

    #: The message queue python-socketio's servers listen on (Redis, or AMQP through kombu).
    socketio_message_queue: str | None = Field(
        None, validation_alias=contract_name("SOCKETIO_MESSAGE_QUEUE"))
    #: The channel on that queue (python-socketio's default: "socketio").
    socketio_channel: str = Field(
        "socketio", min_length=1, validation_alias=contract_name("SOCKETIO_CHANNEL"))
    #: Also send every delivered batch to this broadcaster, best effort (the migration mode).
    mirror: str | None = None
    #: The port ``relaycast socketio`` listens on (and that browsers reach it on by default).
    socketio_port: int = Field(8001, ge=1, le=65535)

    @field_validator("socketio_message_queue")
    @classmethod
    def _socketio_queue(cls, value: str | None) -> str | None:
        return url_with_scheme(value, SOCKETIO_QUEUE_SCHEMES,
                               "redis://host:6379/0 or amqp://user@host//")

    @field_validator("mirror")
    @classmethod
    def _mirror_name(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        name = value.strip().lower()
        if name not in PROVIDERS:
            raise ValueError(f"mirror to a live provider ({', '.join(PROVIDERS)}), not {name!r}")
        return name
