"""What the API answers, as the OpenAPI document (``/openapi.json``) describes it.

Every JSON route has a response model here, and FastAPI validates each answer against it
before sending it: a route that drifted from its document would answer 500 (and the
schemathesis test, ``tests/test_api_schema.py``, would say so) rather than surprise a client.
The models mirror the JSON the routes have always returned; they add no key and drop none.

Errors are :class:`Problem` (``{"detail": "<one line>"}``) for every status the API decides
itself (400, 401, 403, 404, 413, 503), and FastAPI's own validation error for 422 (a query
or path parameter out of its declared range: ``{"detail": [{"loc", "msg", "type"}, ...]}``).
Which route answers which status is declared where the route is (``responses=``), with
:func:`problems` and the shared declarations below.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from fastapi import Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from broadcasters.base import encode_json
from broadcasters.status import HealthReport
from broadcasters.wire import MAX_CHANNEL_CHARS, MAX_RUN_ID_CHARS
from config.settings import CHANNEL_NAME_PATTERN
from workflows.models import RunStatus

#: The OpenAPI ``responses=`` mapping FastAPI takes.
Responses = dict[int | str, dict[str, Any]]


class SafeJSONResponse(JSONResponse):
    """JSON encoded as relaycast sends it to providers: valid UTF-8 whatever the data.

    Routes name it as their ``response_class`` explicitly: FastAPI serialises a route that
    only inherits it (the app's default) straight to bytes with pydantic, which refuses a lone
    surrogate (text an older version stored) where this class writes U+FFFD.
    """

    def render(self, content: Any) -> bytes:
        return encode_json(content).encode("utf-8")


class _Answer(BaseModel):
    # Every field is in every answer (None where the docstring says so): the document marks
    # them all required, so a client can rely on the key being there.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


# Errors --------------------------------------------------------------------------------------

class Problem(BaseModel):
    """Why a request was refused, in one line (never echoing a secret or a whole input)."""

    detail: str


def problems(descriptions: dict[int, str], **extra: dict[str, Any]) -> Responses:
    """``responses=`` declaring each status of ``descriptions`` as a :class:`Problem`;
    ``extra`` (keyed ``"401"``…) adds OpenAPI fields to one of them (``headers``)."""
    return {status: {"model": Problem, "description": text, **extra.get(str(status), {})}
            for status, text in descriptions.items()}


#: Every route, whatever it is: :class:`relaycast.api.app.BodyLimit` answers before any route
#: runs, for any method (a GET with a body too).
BODY_LIMIT = problems({
    400: "Bad request: `detail` says what is wrong (here: a `Content-Length` that is not a "
         "number).",
    413: "The request body is over the API's cap of 1 MiB (a declared `Content-Length` "
         "is refused before the body is read; a chunked one as soon as it passes the cap).",
})

#: A route behind the admin token (declared only when ``RELAYCAST_ADMIN_TOKEN`` is set).
UNAUTHORIZED = problems(
    {401: "No valid `Authorization: Bearer <RELAYCAST_ADMIN_TOKEN>` header and no valid "
          "viewer session cookie."},
    **{"401": {"headers": {"WWW-Authenticate": {
        "description": "`Bearer`: the scheme this API takes.", "schema": {"type": "string"}}}}})

#: A route taking a run id in its path (:meth:`broadcasters.wire.Channels.validate_run_id`).
INVALID_RUN_ID = problems({
    400: "The run id cannot name a channel (characters other than letters, digits and "
         "`_ - = @ , . ;`, or too long), or a malformed `Content-Length`.",
})


#: A run id in a path, as the document describes it: the route checks it and answers 400
#: saying why, rather than FastAPI's 422 (:data:`INVALID_RUN_ID`).
RunIdPath = Annotated[str, Path(
    description="A run id: letters, digits and `_ - = @ , . ;`; at most 128 characters (fewer "
                "when `RELAYCAST_CHANNEL_PREFIX` is long: a channel name holds 164).",
    json_schema_extra={"pattern": f"^{CHANNEL_NAME_PATTERN.pattern}$",
                       "maxLength": MAX_RUN_ID_CHARS})]


# Runs and their lines ------------------------------------------------------------------------

class LogEvent(_Answer):
    """One stored line, as browsers receive it (:class:`broadcasters.wire.LineEvent`)."""

    seq: int = Field(description="Its place in the run: contiguous, increasing from 1.")
    ts: int = Field(description="When it was logged, epoch milliseconds.")
    level: str = Field(description="`debug`, `info`, `warning` or `error`.")
    message: str
    data: dict[str, Any] = Field(description="The keyword arguments it was logged with.")


class RunLogs(_Answer):
    """A page of a run's stored lines, in seq order (``GET /runs/{run_id}/logs``)."""

    run_id: str
    channel: str = Field(description="The private channel the run's lines are broadcast on.")
    events: list[LogEvent]
    next_after_seq: int = Field(description="`after_seq` for the next page: the last seq "
                                "here, or the `after_seq` asked for when there is none.")


class RunInfo(_Answer):
    """One run: its record (None where lines were stored outside a workflow task, with no
    run record) and its stored lines' count."""

    run_id: str
    workflow: str | None
    status: RunStatus | None
    params: dict[str, Any]
    started_at: int | None = Field(description="Epoch milliseconds.")
    finished_at: int | None = Field(description="Epoch milliseconds; None while it runs.")
    duration_s: float | None
    error: str | None
    lines: int = Field(description="How many lines are stored.")
    last_seq: int = Field(description="The last stored line's seq (0: none).")
    channel: str


class RunList(_Answer):
    """Recent runs, newest first (``GET /runs``)."""

    runs: list[RunInfo]


class WorkflowParam(_Answer):
    name: str
    type: str | None = Field(description="Its annotation, as Python writes it (None: none).")
    default: Any = Field(description="Its default as JSON (its `repr` when JSON has no such "
                         "value); None when required.")
    required: bool


class WorkflowInfo(_Answer):
    name: str
    task: str = Field(description="The Celery task that runs it.")
    module: str
    doc: str = Field(description="The first line of its docstring.")
    params: list[WorkflowParam]


class WorkflowList(_Answer):
    """The workflows this API imported (``RELAYCAST_WORKFLOWS``), as ``relaycast workflows``."""

    workflows: list[WorkflowInfo]


# The admin panel and the browser's transport ---------------------------------------------------

class BroadcasterStatus(HealthReport):
    """The health report, computed live, with the panel's chart of messages sent."""

    sent_per_minute: dict[str, list[int]] = Field(
        description="Per broadcaster: messages sent in each of the last 60 minutes, oldest first.")
    sent_per_minute_until: int = Field(
        description="The end of the last minute of `sent_per_minute`, epoch seconds.")


class PusherBrowserConfig(_Answer):
    """The options of ``new Pusher(key, options)``, named as pusher-js names them."""

    key: str | None
    cluster: str
    ws_host: str | None = Field(alias="wsHost")
    ws_port: int | None = Field(alias="wsPort")
    force_tls: bool = Field(alias="forceTLS")


class SocketIOBrowserConfig(_Answer):
    url: str | None = Field(description="None: the page's own host, on `port`.")
    port: int


class BrowserConfig(_Answer):
    """Which transport a browser should use, and how (``GET /ui/config``; never a secret)."""

    transport: Literal["pusher", "socketio", "polling"]
    reason: str | None = Field(description="Why the transport is `polling` (None otherwise).")
    active_broadcaster: str
    channel_prefix: str
    poll_interval_ms: int
    config_refresh_ms: int
    pusher: PusherBrowserConfig | None
    socketio: SocketIOBrowserConfig | None


# Pusher ----------------------------------------------------------------------------------------

class PusherAuth(_Answer):
    """A signed subscription, as pusher-js expects it."""

    auth: str = Field(description="`<key>:<hex HMAC-SHA256 of socket_id:channel_name>`.")


#: ``POST /pusher/auth``'s body, for the document (the route reads the raw body: pusher-js sends
#: a form, scripts may send JSON).
PUSHER_AUTH_BODY: dict[str, Any] = {
    "required": True,
    "description": "The subscription to sign, as pusher-js sends it (a form) or as JSON.",
    "content": {
        media_type: {"schema": {
            "type": "object",
            "required": ["socket_id", "channel_name"],
            "properties": {
                "socket_id": {"type": "string", "description": "pusher-js's `<digits>.<digits>`.",
                              "example": "123.456"},
                "channel_name": {"type": "string", "maxLength": MAX_CHANNEL_CHARS,
                                 "example": "private-logs-run-7"},
            },
        }}
        for media_type in ("application/x-www-form-urlencoded", "application/json")
    },
}


# A TypedDict (typing_extensions': pydantic needs it before Python 3.12) because ``occupancy``
# is absent, not null, when occupancy is on.
class WebhookAnswer(TypedDict):
    """A webhook taken: how many occupancy changes were recorded, how many events ignored.
    `occupancy` is there (`off`) only when `RELAYCAST_OCCUPANCY` is off: nothing is recorded."""

    ok: Literal[True]
    recorded: int
    ignored: int
    occupancy: NotRequired[Literal["off"]]


#: ``POST /pusher/webhook``'s headers and body, for the document (the route reads the raw
#: body: the signature is over its bytes).
PUSHER_WEBHOOK_EXTRA: dict[str, Any] = {
    "parameters": [
        {"name": "X-Pusher-Key", "in": "header", "required": True,
         "description": "The Pusher app key.", "schema": {"type": "string"}},
        {"name": "X-Pusher-Signature", "in": "header", "required": True,
         "description": "Hex HMAC-SHA256 of the raw body, keyed by the app secret.",
         "schema": {"type": "string"}},
    ],
    "requestBody": {
        "required": True,
        "description": "Pusher's webhook (`channel_occupied` and `channel_vacated` are "
                       "recorded; other events are skipped).",
        "content": {"application/json": {"schema": {
            "type": "object",
            "required": ["time_ms", "events"],
            "properties": {
                "time_ms": {"type": "integer", "description": "When Pusher sent it, epoch "
                            "milliseconds: refused (401) when more than five minutes off."},
                "events": {"type": "array", "items": {
                    "type": "object",
                    "required": ["name", "channel"],
                    "properties": {"name": {"type": "string", "example": "channel_occupied"},
                                   "channel": {"type": "string"}},
                }},
            },
        }}},
    },
}
