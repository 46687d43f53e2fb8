"""The one settings object. Nothing else in relaycast reads ``os.environ``.

Values come from the environment and an optional ``.env`` file in the working
directory. Pusher keeps the names its users already have (``PUSHER_*``); the
project's own knobs are ``RELAYCAST_*``, named by a rule (:mod:`config.naming`).

:class:`Settings` is flat (``settings.flush_interval_ms``) but declared by concern:
:mod:`config.providers` (Pusher, Ably, Socket.IO), :mod:`config.urls` (Redis, the broker,
the database) and :mod:`config.knobs` (relaycast's own); this module composes them and
holds what spans groups: which broadcasters, in what order, and the checks across fields.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.durations import parse_duration_s
from config.knobs import (
    CHANNEL_NAME_PATTERN,
    MIN_ADMIN_TOKEN_CHARS,
    PLACEHOLDER_TOKENS,
    REQUIRED_CHANNEL_PREFIX,
    TOKEN_COMMAND,
    AlertSettings,
    BrowserSettings,
    CaptureSettings,
    KnobSettings,
    OccupancySettings,
)
from config.naming import ENV_NAMES, env_name
from config.providers import PROVIDER_NEEDS, PROVIDERS, AblySettings, PusherSettings, SocketIOSettings
from config.urls import InfrastructureSettings, normalise_database_url

__all__ = [
    "CHANNEL_NAME_PATTERN", "KNOWN_BROADCASTERS", "MIN_ADMIN_TOKEN_CHARS", "PLACEHOLDER_TOKENS",
    "PROVIDERS", "PROVIDER_NEEDS", "REQUIRED_CHANNEL_PREFIX", "TOKEN_COMMAND", "ConfigError",
    "Settings", "describe_validation_error", "load_settings", "normalise_database_url",
]

KNOWN_BROADCASTERS = (*PROVIDERS, "log")


class ConfigError(Exception):
    """Invalid configuration: one line naming the variable, never its value."""


# pydantic collects fields from the last base to the first, so the groups are listed in
# reverse: the fields (and so a message's problems, and the repr) run Pusher, Ably,
# infrastructure, knobs, occupancy, Socket.IO, capture, browser, alerts.
class Settings(BaseSettings, AlertSettings, BrowserSettings, CaptureSettings, SocketIOSettings,
               OccupancySettings, KnobSettings, InfrastructureSettings, AblySettings,
               PusherSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        alias_generator=ENV_NAMES,
        # Only the variables' own names: a LOG_LEVEL or WORKFLOWS set for another program
        # must not reach relaycast's log_level or workflows.
        populate_by_name=False,
        case_sensitive=False,
        frozen=True,
    )

    @field_validator("broadcasters")
    @classmethod
    def _known_broadcasters(cls, value: str | None) -> str | None:
        if value is None:
            return None
        names = [part.strip().lower() for part in value.split(",") if part.strip()]
        if not names:
            raise ValueError("name at least one broadcaster, e.g. pusher,ably,log")
        for name in names:
            if name not in KNOWN_BROADCASTERS:
                raise ValueError(
                    f"unknown broadcaster {name!r} (known: {', '.join(KNOWN_BROADCASTERS)})"
                )
        if len(set(names)) != len(names):
            raise ValueError("a broadcaster is named twice")
        return ",".join(names)

    @model_validator(mode="after")
    def _providers_complete(self) -> Settings:
        pusher_parts = {
            "PUSHER_APP_ID": self.pusher_app_id,
            "PUSHER_KEY": self.pusher_key,
            "PUSHER_SECRET": self.pusher_secret,
        }
        given = [name for name, value in pusher_parts.items() if value]
        if given and len(given) != len(pusher_parts):
            missing = next(name for name, value in pusher_parts.items() if not value)
            raise ValueError(f"{missing}: is required when {given[0]} is set")
        if self.retry_backoff_max_s >= self.visibility_timeout_s:
            raise ValueError("RELAYCAST_RETRY_BACKOFF_MAX_S: must be below "
                             "RELAYCAST_VISIBILITY_TIMEOUT_S, or Redis redelivers a waiting retry "
                             "as a duplicate")
        for name in self.broadcaster_order:
            if name in PROVIDERS and not self.provider_configured(name):
                raise ValueError(f"RELAYCAST_BROADCASTERS: {name} is listed but "
                                 f"{PROVIDER_NEEDS[name]} is not set")
        if self.occupancy == "webhooks" and not (self.redis_url and self.provider_configured("pusher")):
            raise ValueError("RELAYCAST_OCCUPANCY: webhooks needs Pusher (PUSHER_*) and REDIS_URL "
                             "(the API records what the webhooks say; every worker reads it)")
        if self.mirror and not self.provider_configured(self.mirror):
            raise ValueError(f"RELAYCAST_MIRROR: {self.mirror} needs {PROVIDER_NEEDS[self.mirror]}")
        return self

    # Derived values -------------------------------------------------------------------------

    @property
    def retention_s(self) -> float:
        """``RELAYCAST_RETENTION_DAYS`` in seconds (0: keep everything)."""
        return self.retention_days * 86_400.0

    def provider_configured(self, name: str) -> bool:
        if name == "pusher":
            return bool(self.pusher_app_id and self.pusher_key and self.pusher_secret)
        if name == "ably":
            return self.ably_api_key is not None
        if name == "socketio":
            return self.socketio_message_queue is not None
        return name == "log"

    @property
    def broadcaster_order(self) -> tuple[str, ...]:
        """Priority order: ``RELAYCAST_BROADCASTERS``, else every configured provider, then log."""
        if self.broadcasters:
            return tuple(self.broadcasters.split(","))
        return (*(name for name in PROVIDERS if self.provider_configured(name)), "log")

    @property
    def broker_url(self) -> str | None:
        return self.celery_broker_url or self.redis_url

    @property
    def database_url_or_default(self) -> str:
        if self.database_url:
            return self.database_url
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        return f"sqlite:///{base / 'relaycast' / 'relaycast.db'}"

    @property
    def quota_disable_s(self) -> float | None:
        """Seconds a quota error disables a provider for; None means until the next UTC midnight."""
        return None if self.quota_disable == "midnight" else parse_duration_s(self.quota_disable)

    @property
    def browser_ws(self) -> tuple[str | None, int | None, bool]:
        """(host, port, TLS) a browser connects to: ``RELAYCAST_BROWSER_WS_*``, else ``PUSHER_*``."""
        host = self.browser_ws_host or self.pusher_host
        port = self.browser_ws_port or self.pusher_port
        tls = self.pusher_ssl if self.browser_ws_tls is None else self.browser_ws_tls
        return host, port, tls


def _env_name(field: str) -> str:
    """The variable a field of :class:`Settings` is read from (see :mod:`config.naming`)."""
    return env_name(Settings, field)


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, naming the variable; the offending value is never shown."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        loc = item.get("loc") or ()
        if loc:
            lines.append(f"{_env_name(str(loc[0]))}: {message}")
        else:
            lines.append(message)
    return "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings or raise :class:`ConfigError` with a readable, secret-free message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {describe_validation_error(exc)}") from None
