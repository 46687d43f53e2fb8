"""relaycast's own knobs: every field here is read from ``RELAYCAST_`` and its name in capitals
(the rule in :mod:`config.naming`), e.g. ``flush_interval_ms`` from
``RELAYCAST_FLUSH_INTERVAL_MS``."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from config.durations import parse_duration_s
from config.origins import parse_origins
from config.urls import url_with_scheme

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


class KnobSettings(BaseModel):
    """Delivery, timing, storage and access (``RELAYCAST_BROADCASTERS`` is checked in
    :mod:`config.settings`, next to the broadcasters it names)."""

    broadcasters: str | None = None
    channel_prefix: str = REQUIRED_CHANNEL_PREFIX
    flush_interval_ms: int = Field(50, ge=1, le=60_000)
    flush_max_lines: int = Field(1000, ge=1, le=100_000)
    buffer_max_lines: int = Field(100_000, ge=100, le=10_000_000)
    broadcast_max_retries: int = Field(8, ge=0, le=100)
    retry_backoff_max_s: float = Field(60.0, gt=0, le=3600)
    visibility_timeout_s: int = Field(300, ge=1, le=86_400)
    sweep_interval_s: float = Field(30.0, gt=0, le=86_400)
    sweep_after_s: float = Field(120.0, gt=0, le=86_400)
    health_interval_s: float = Field(60.0, gt=0, le=86_400)
    #: A running run with no heartbeat from any process running it for this long is marked
    #: ``lost`` by the ``relaycast.runs_lost`` beat task (its worker died: SIGKILL, OOM, host
    #: lost). Workers refresh heartbeats every min(5, this/4) s; beat checks every
    #: min(30, this/4) s. It must exceed the longest a canvas step waits in the queue.
    run_lost_after_s: float = Field(120.0, ge=1, le=7 * 86_400)
    #: Lines, ended runs and health reports older than this many days are deleted by the
    #: ``relaycast.prune`` beat task; 0 keeps everything (the task does nothing).
    retention_days: int = Field(30, ge=0, le=36_500)
    prune_interval_s: float = Field(3600.0, ge=1, le=7 * 86_400)
    daily_quota: int = Field(200_000, ge=1)
    state_prefix: str = Field("relaycast:", min_length=1)
    quota_disable: str = "midnight"
    rate_limit_pause_s: float = Field(1.0, gt=0, le=3600)
    flag_cache_ms: int = Field(1000, ge=0, le=60_000)
    provider_timeout_s: float = Field(5.0, gt=0, le=120)
    order_wait_ms: int = Field(2000, ge=0, le=60_000)
    admin_token: SecretStr | None = None
    #: ``GET /metrics`` (Prometheus) answers without the admin token (for a scraper on a
    #: private network); everything else keeps needing it.
    metrics_public: bool = False
    #: ``module:function`` deciding who may subscribe to an app channel (``broadcast()``):
    #: called with the request and the channel's name, returns bool (relaycast.api.auth).
    channel_authorizer: str | None = None
    #: The log level of the ``relaycast`` CLI only: its commands, including the servers it
    #: starts (``relaycast api``, ``relaycast socketio``). Celery's worker and beat ignore it
    #: and log as Celery's own ``--loglevel`` says.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: How every relaycast process logs: ``text`` (default, for people) or ``json`` (one
    #: object per line: ``ts``, ``level``, ``logger``, ``message`` and, where known,
    #: ``run_id``, ``task_id``, ``broadcaster``, ``exception``): the worker, beat, the API and
    #: the CLI (tasks.logformat).
    log_format: Literal["text", "json"] = "text"
    #: Modules holding the user's workflows (``acme.jobs,acme.reports``), imported by the
    #: worker, beat, the CLI and the API; ``workflows.examples`` registers the examples.
    workflows: Annotated[tuple[str, ...], NoDecode] = ()

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

    @field_validator("quota_disable")
    @classmethod
    def _quota_disable(cls, value: str) -> str:
        if value.strip().lower() != "midnight":
            parse_duration_s(value)
        return value.strip().lower()

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

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

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


class AlertSettings(BaseModel):
    """Alerts: one POST per change of health, of a broadcaster's state and of the quota used
    (broadcasters.alerts), sent by beat's health task."""

    #: Where alerts go: any http(s) URL taking a JSON POST (a Slack incoming webhook works as
    #: it is). A secret: a Slack-style URL carries its token in the path, so it is never shown.
    alert_webhook_url: SecretStr | None = None
    #: Signs every alert (HMAC-SHA256 of ``{timestamp}.{body}``, header
    #: ``X-Relaycast-Signature: sha256=<hex>``) when set.
    alert_secret: SecretStr | None = None

    @field_validator("alert_webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        text = value.get_secret_value().strip()
        try:
            parts = urlsplit(text)
            usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
            _ = parts.port  # a port that is not a number raises here
        except ValueError:
            usable = False
        if not usable:
            raise ValueError("not an http(s) URL (e.g. https://hooks.slack.com/services/...)")
        return SecretStr(text)

    @field_validator("alert_secret")
    @classmethod
    def _non_empty_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty: unset it to send alerts unsigned, or set a random "
                             f"secret (e.g. {TOKEN_COMMAND})")
        return value


class OccupancySettings(BaseModel):
    """Occupancy: publish only what someone watches."""

    #: "webhooks": skip a run's lines while nobody is subscribed to its channel (known from
    #: Pusher's signed channel_occupied / channel_vacated webhooks, reconciled against the
    #: provider's API); "off" (default): publish everything.
    occupancy: Literal["off", "webhooks"] = "off"
    #: How often beat asks the provider which channels are occupied.
    occupancy_reconcile_s: float = Field(60.0, gt=0, le=3600)

    @field_validator("occupancy", mode="before")
    @classmethod
    def _lower_occupancy(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class CaptureSettings(BaseModel):
    """Capture: a workflow task's own logging records and printed lines become lines of its run."""

    #: "logging,stdout" (default), "logging", "stdout" or "off" (see workflows.capture).
    capture: str = "logging,stdout"
    #: The least level of a logging record captured (a logger's own level applies first).
    capture_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

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


class BrowserSettings(BaseModel):
    """Browser (viewer).

    Where a browser reaches the Pusher-protocol WebSocket server: the server-side
    PUSHER_HOST (e.g. "soketi" in docker-compose) need not resolve in a browser. Each
    ``browser_ws_*`` defaults to its PUSHER_* counterpart (see ``Settings.browser_ws``).
    """

    browser_ws_host: str | None = None
    browser_ws_port: int | None = Field(None, ge=1, le=65535)
    browser_ws_tls: bool | None = None
    #: Where a browser reaches ``relaycast socketio`` (default: the page's host, on
    #: RELAYCAST_SOCKETIO_PORT), e.g. https://live.example.com behind a proxy.
    browser_socketio_url: str | None = None
    #: How often a browser polls the history endpoint when live delivery is not possible.
    browser_poll_interval_ms: int = Field(1000, ge=200, le=60_000)
    #: Other origins whose pages may connect to ``relaycast socketio``
    #: (``https://admin.example.com,http://localhost:3000``), besides the viewer's own host.
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("browser_socketio_url")
    @classmethod
    def _browser_socketio_url(cls, value: str | None) -> str | None:
        return url_with_scheme(value, ("http", "https"), "https://live.example.com")

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        return parse_origins(value) if isinstance(value, str) else value
