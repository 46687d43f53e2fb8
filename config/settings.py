"""The one settings object. Nothing else in relaycast reads ``os.environ``.

Values come from the environment and an optional ``.env`` file in the working
directory. Pusher keeps the names its users already have (``PUSHER_*``); the
project's own knobs are ``RELAYCAST_*``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.durations import parse_duration_s

PROVIDERS = ("pusher", "ably", "socketio")
#: What each provider needs set before it can be listed.
PROVIDER_NEEDS = {"pusher": "PUSHER_APP_ID, PUSHER_KEY, PUSHER_SECRET", "ably": "ABLY_API_KEY",
                  "socketio": "SOCKETIO_MESSAGE_QUEUE"}
KNOWN_BROADCASTERS = (*PROVIDERS, "log")
_APP_ID = re.compile(r"^\d+$")
#: Characters Pusher allows in a channel name (so in the prefix, and in a run id).
CHANNEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9_\-=@,.;]+")
#: Every relaycast channel is private: a browser needs the API's signature to subscribe.
REQUIRED_CHANNEL_PREFIX = "private-"
#: Shortest admin token accepted: anything shorter is guessable, not a secret.
MIN_ADMIN_TOKEN_CHARS = 16
#: Values people copy from examples; refused so that no deployment runs with one.
PLACEHOLDER_TOKENS = frozenset({"change-me", "changeme", "change_me", "secret", "password",
                                "admin", "token", "your-token-here"})
#: How to make a token (a command shown in messages, not a secret).
TOKEN_COMMAND = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"  # noqa: S105
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_BROKER_SCHEMES = (*_REDIS_SCHEMES, "amqp", "amqps", "pyamqp", "memory", "sentinel", "sqs")
_SOCKETIO_QUEUE_SCHEMES = (*_REDIS_SCHEMES, "amqp", "amqps")


def _env(name: str) -> Any:
    """Field whose environment variable is ``name`` (and whose Python name also works)."""
    return AliasChoices(name)


class ConfigError(Exception):
    """Invalid configuration: one line naming the variable, never its value."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
        frozen=True,
    )

    # Pusher Channels (or any Pusher-protocol server such as soketi).
    pusher_app_id: str | None = Field(None, validation_alias=_env("PUSHER_APP_ID"))
    pusher_key: str | None = Field(None, validation_alias=_env("PUSHER_KEY"))
    pusher_secret: SecretStr | None = Field(None, validation_alias=_env("PUSHER_SECRET"))
    pusher_cluster: str | None = Field(None, validation_alias=_env("PUSHER_CLUSTER"))
    pusher_host: str | None = Field(None, validation_alias=_env("PUSHER_HOST"))
    pusher_port: int | None = Field(None, ge=1, le=65535, validation_alias=_env("PUSHER_PORT"))
    pusher_ssl: bool = Field(True, validation_alias=_env("PUSHER_SSL"))
    pusher_max_event_bytes: int = Field(
        10_000, ge=256, le=10_240, validation_alias=_env("RELAYCAST_PUSHER_MAX_EVENT_BYTES")
    )

    # Ably (fallback).
    ably_api_key: SecretStr | None = Field(None, validation_alias=_env("ABLY_API_KEY"))
    ably_rest_host: str | None = Field(None, validation_alias=_env("ABLY_REST_HOST"))
    ably_rest_port: int | None = Field(None, ge=1, le=65535, validation_alias=_env("ABLY_REST_PORT"))
    ably_tls: bool = Field(True, validation_alias=_env("ABLY_TLS"))

    # Infrastructure.
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    celery_broker_url: str | None = Field(None, validation_alias=_env("CELERY_BROKER_URL"))
    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))

    # relaycast's own knobs.
    broadcasters: str | None = Field(None, validation_alias=_env("RELAYCAST_BROADCASTERS"))
    channel_prefix: str = Field(REQUIRED_CHANNEL_PREFIX, validation_alias=_env("RELAYCAST_CHANNEL_PREFIX"))
    flush_interval_ms: int = Field(
        50, ge=1, le=60_000, validation_alias=_env("RELAYCAST_FLUSH_INTERVAL_MS")
    )
    flush_max_lines: int = Field(
        1000, ge=1, le=100_000, validation_alias=_env("RELAYCAST_FLUSH_MAX_LINES")
    )
    buffer_max_lines: int = Field(
        100_000, ge=100, le=10_000_000, validation_alias=_env("RELAYCAST_BUFFER_MAX_LINES")
    )
    broadcast_max_retries: int = Field(
        8, ge=0, le=100, validation_alias=_env("RELAYCAST_BROADCAST_MAX_RETRIES")
    )
    retry_backoff_max_s: float = Field(
        60.0, gt=0, le=3600, validation_alias=_env("RELAYCAST_RETRY_BACKOFF_MAX_S")
    )
    visibility_timeout_s: int = Field(
        300, ge=1, le=86_400, validation_alias=_env("RELAYCAST_VISIBILITY_TIMEOUT_S")
    )
    sweep_interval_s: float = Field(
        30.0, gt=0, le=86_400, validation_alias=_env("RELAYCAST_SWEEP_INTERVAL_S")
    )
    sweep_after_s: float = Field(
        120.0, gt=0, le=86_400, validation_alias=_env("RELAYCAST_SWEEP_AFTER_S")
    )
    health_interval_s: float = Field(
        60.0, gt=0, le=86_400, validation_alias=_env("RELAYCAST_HEALTH_INTERVAL_S")
    )
    #: Lines, ended runs and health reports older than this many days are deleted by the
    #: ``relaycast.prune`` beat task; 0 keeps everything (the task does nothing).
    retention_days: int = Field(30, ge=0, le=36_500, validation_alias=_env("RELAYCAST_RETENTION_DAYS"))
    prune_interval_s: float = Field(
        3600.0, ge=1, le=7 * 86_400, validation_alias=_env("RELAYCAST_PRUNE_INTERVAL_S")
    )
    daily_quota: int = Field(200_000, ge=1, validation_alias=_env("RELAYCAST_DAILY_QUOTA"))
    state_prefix: str = Field("relaycast:", min_length=1, validation_alias=_env("RELAYCAST_STATE_PREFIX"))
    quota_disable: str = Field("midnight", validation_alias=_env("RELAYCAST_QUOTA_DISABLE"))
    rate_limit_pause_s: float = Field(
        1.0, gt=0, le=3600, validation_alias=_env("RELAYCAST_RATE_LIMIT_PAUSE_S")
    )
    flag_cache_ms: int = Field(1000, ge=0, le=60_000, validation_alias=_env("RELAYCAST_FLAG_CACHE_MS"))
    provider_timeout_s: float = Field(
        5.0, gt=0, le=120, validation_alias=_env("RELAYCAST_PROVIDER_TIMEOUT_S")
    )
    order_wait_ms: int = Field(2000, ge=0, le=60_000, validation_alias=_env("RELAYCAST_ORDER_WAIT_MS"))
    admin_token: SecretStr | None = Field(None, validation_alias=_env("RELAYCAST_ADMIN_TOKEN"))
    #: ``module:function`` deciding who may subscribe to an app channel (``broadcast()``):
    #: called with the request and the channel's name, returns bool (relaycast.api.auth).
    channel_authorizer: str | None = Field(
        None, validation_alias=_env("RELAYCAST_CHANNEL_AUTHORIZER"))

    @field_validator("channel_authorizer")
    @classmethod
    def _module_function(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        module, sep, function = value.strip().partition(":")
        if not sep or not function.isidentifier() or not all(
                part.isidentifier() for part in module.split(".")):
            raise ValueError("use module:function (e.g. acme.auth:can_subscribe)")
        return value.strip()

    #: The CLI's own log level (``relaycast ...`` commands); workers log as Celery says.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=_env("RELAYCAST_LOG_LEVEL")
    )
    #: Modules holding the user's workflows (``acme.jobs,acme.reports``), imported by the
    #: worker, beat, the CLI and the API; ``workflows.examples`` registers the examples.
    workflows: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("RELAYCAST_WORKFLOWS"))

    # Occupancy: publish only what someone watches -----------------------------------------
    #: "webhooks": skip a run's lines while nobody is subscribed to its channel (known from
    #: Pusher's signed channel_occupied / channel_vacated webhooks, reconciled against the
    #: provider's API); "off" (default): publish everything.
    occupancy: Literal["off", "webhooks"] = Field("off", validation_alias=_env("RELAYCAST_OCCUPANCY"))
    #: How often beat asks the provider which channels are occupied.
    occupancy_reconcile_s: float = Field(
        60.0, gt=0, le=3600, validation_alias=_env("RELAYCAST_OCCUPANCY_RECONCILE_S"))

    # Socket.IO (a self-hosted, quota-free live transport, and the migration path) --------
    #: The message queue python-socketio's servers listen on (Redis, or AMQP through kombu).
    socketio_message_queue: str | None = Field(
        None, validation_alias=_env("SOCKETIO_MESSAGE_QUEUE"))
    #: The channel on that queue (python-socketio's default: "socketio").
    socketio_channel: str = Field("socketio", min_length=1, validation_alias=_env("SOCKETIO_CHANNEL"))
    #: Also send every delivered batch to this broadcaster, best effort (the migration mode).
    mirror: str | None = Field(None, validation_alias=_env("RELAYCAST_MIRROR"))
    #: The port ``relaycast socketio`` listens on (and that browsers reach it on by default).
    socketio_port: int = Field(8001, ge=1, le=65535, validation_alias=_env("RELAYCAST_SOCKETIO_PORT"))

    # Capture: a workflow task's own logging records and printed lines become lines of its run
    #: "logging,stdout" (default), "logging", "stdout" or "off" (see workflows.capture).
    capture: str = Field("logging,stdout", validation_alias=_env("RELAYCAST_CAPTURE"))
    #: The least level of a logging record captured (a logger's own level applies first).
    capture_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", validation_alias=_env("RELAYCAST_CAPTURE_LEVEL"))

    @field_validator("capture", mode="before")
    @classmethod
    def _capture_parts(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        parts = {part.strip().lower() for part in value.split(",") if part.strip()}
        if parts == {"off"}:
            return "off"
        if not parts or not parts <= {"logging", "stdout"}:
            raise ValueError("use logging,stdout, logging, stdout or off")
        return ",".join(part for part in ("logging", "stdout") if part in parts)

    @field_validator("capture_level", mode="before")
    @classmethod
    def _upper_capture_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    # Browser (viewer) ---------------------------------------------------------------------
    # Where a browser reaches the Pusher-protocol WebSocket server: the server-side
    # PUSHER_HOST (e.g. "soketi" in docker-compose) need not resolve in a browser.
    # Each defaults to its PUSHER_* counterpart (see ``browser_ws``).
    browser_ws_host: str | None = Field(None, validation_alias=_env("RELAYCAST_BROWSER_WS_HOST"))
    browser_ws_port: int | None = Field(
        None, ge=1, le=65535, validation_alias=_env("RELAYCAST_BROWSER_WS_PORT")
    )
    browser_ws_tls: bool | None = Field(None, validation_alias=_env("RELAYCAST_BROWSER_WS_TLS"))
    #: Where a browser reaches ``relaycast socketio`` (default: the page's host, on
    #: RELAYCAST_SOCKETIO_PORT), e.g. https://live.example.com behind a proxy.
    browser_socketio_url: str | None = Field(
        None, validation_alias=_env("RELAYCAST_BROWSER_SOCKETIO_URL"))
    #: How often a browser polls the history endpoint when live delivery is not possible.
    browser_poll_interval_ms: int = Field(
        1000, ge=200, le=60_000, validation_alias=_env("RELAYCAST_BROWSER_POLL_INTERVAL_MS")
    )

    @field_validator("occupancy", mode="before")
    @classmethod
    def _lower_occupancy(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("pusher_app_id")
    @classmethod
    def _app_id_digits(cls, value: str | None) -> str | None:
        if value is not None and not _APP_ID.match(value):
            raise ValueError("must be the numeric app id")
        return value

    @field_validator("channel_prefix")
    @classmethod
    def _private_prefix(cls, value: str) -> str:
        if not value.startswith(REQUIRED_CHANNEL_PREFIX):
            raise ValueError(f"must start with {REQUIRED_CHANNEL_PREFIX!r}: other channels are "
                             "public, and anyone with the browser key could read every run's logs")
        if value.startswith("private-encrypted-"):
            raise ValueError("private-encrypted- channels are not supported")
        if not CHANNEL_NAME_PATTERN.fullmatch(value) or len(value) > 64:
            raise ValueError("use at most 64 of: letters, digits and _ - = @ , . ;")
        return value

    @field_validator("admin_token")
    @classmethod
    def _real_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value()
        if not token.strip():
            raise ValueError("is empty: unset it to serve the API on loopback only, or set a "
                             f"random token (e.g. {TOKEN_COMMAND})")
        if token.strip().lower() in PLACEHOLDER_TOKENS:
            raise ValueError(f"is a placeholder from an example: set a random token (e.g. "
                             f"{TOKEN_COMMAND})")
        if len(token) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(f"is too short to be a secret: use at least {MIN_ADMIN_TOKEN_CHARS} "
                             f"characters (e.g. {TOKEN_COMMAND})")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return _url_with_scheme(value, _REDIS_SCHEMES, "redis://host:6379/0")

    @field_validator("celery_broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        return _url_with_scheme(value, _BROKER_SCHEMES, "redis://host:6379/0 or amqp://user@host//")

    @field_validator("socketio_message_queue")
    @classmethod
    def _socketio_queue(cls, value: str | None) -> str | None:
        return _url_with_scheme(value, _SOCKETIO_QUEUE_SCHEMES,
                                "redis://host:6379/0 or amqp://user@host//")

    @field_validator("browser_socketio_url")
    @classmethod
    def _browser_socketio_url(cls, value: str | None) -> str | None:
        return _url_with_scheme(value, ("http", "https"), "https://live.example.com")

    @field_validator("mirror")
    @classmethod
    def _mirror_name(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        name = value.strip().lower()
        if name not in PROVIDERS:
            raise ValueError(f"mirror to a live provider ({', '.join(PROVIDERS)}), not {name!r}")
        return name

    @field_validator("workflows", mode="before")
    @classmethod
    def _module_names(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        names = tuple(name.strip() for name in value.split(",") if name.strip())
        for name in names:
            if not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"{name!r} is not a module name (e.g. acme.jobs,acme.reports)")
        return names

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        return None if value is None else normalise_database_url(value)

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

    @field_validator("quota_disable")
    @classmethod
    def _quota_disable(cls, value: str) -> str:
        if value.strip().lower() != "midnight":
            parse_duration_s(value)
        return value.strip().lower()

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


def _url_with_scheme(value: str | None, schemes: tuple[str, ...], example: str) -> str | None:
    if value is None:
        return None
    scheme, sep, rest = value.strip().partition("://")
    if not sep or scheme.lower() not in schemes or (not rest and scheme != "memory"):
        raise ValueError(f"not a URL this can use (expected {', '.join(s + '://' for s in schemes)}"
                         f", e.g. {example})")
    return value.strip()


#: The SQL databases relaycast stores lines in, and the driver each needs.
_DRIVERS = {"sqlite": ("pysqlite", "sqlite3", None),
            "postgresql": ("psycopg", "psycopg", "pip install 'relaycast[postgres]'")}


def normalise_database_url(value: str) -> str:
    """A SQLAlchemy URL relaycast supports, or ValueError saying what to do.

    ``postgres://`` and ``postgresql://`` (what hosting providers hand out) mean PostgreSQL
    through psycopg 3, the driver the ``postgres`` extra installs.
    """
    import importlib.util

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = value.strip()
    for alias in ("postgres://", "postgresql://"):
        if text.startswith(alias):
            text = "postgresql+psycopg://" + text[len(alias):]
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError("not a database URL (e.g. sqlite:////var/lib/relaycast/relaycast.db or "
                         "postgresql+psycopg://user:password@host:5432/relaycast)") from None
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend not in _DRIVERS:
        raise ValueError(f"{backend} is not supported: relaycast stores lines in SQLite or "
                         "PostgreSQL (postgresql+psycopg://user:password@host:5432/db)")
    expected, module, install = _DRIVERS[backend]
    if driver != expected:
        raise ValueError(f"use {backend}+{expected}:// (the {driver} driver is not supported)")
    if install and importlib.util.find_spec(module) is None:
        raise ValueError(f"{backend} needs the {module} driver: {install}")
    return url.render_as_string(hide_password=False)


def _env_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        return first if isinstance(first, str) else field.upper()
    return field.upper()


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
