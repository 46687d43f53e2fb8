"""Every name and format that crosses a process boundary, defined once.

* Celery queues and task names (``relaycast.*`` on the broadcast queue, except
  ``relaycast.run_finished``; a workflow or step ``N`` is the task ``workflows.N``).
* Channel names: run R's lines on ``{prefix}logs-{R}``, admin events on
  ``{prefix}admin-events``, health reports on ``{prefix}admin-health``.
* Event names: ``log`` for lines, ``provider-changed`` when traffic moves to another
  broadcaster, ``health`` for the periodic report.
* The broadcast task's argument, :class:`Batch`: the lines of one emitter flush (per run,
  in seq order) and its admin events.
* A run's admin events: ``started`` (:data:`RUN_STARTED_EVENT`) and its end (``finished``,
  ``failed``, ...: any admin event whose data carries the run's ``last_seq``,
  :data:`LAST_SEQ_KEY`, the seq of its last line when it ended). The ordering gate publishes
  them in the run's order: ``started`` before line 1, the end after line ``last_seq``.
* Message ids: ``{run_id}:{first_seq}-{last_seq}``, stable across retries, so a provider's
  idempotent publishing and a client's de-duplication line up.
* Application channels (``relaycast.broadcast(channel, event, data)``): ``{prefix}{channel}``
  for any ``channel`` Pusher allows that is not one of relaycast's own; each event is one
  :class:`AppMessage` with the id ``app/{stream}/{seq}`` (``/`` never occurs in a run id, so
  no log message id can look like one).

Run ids become part of a channel name, so they may only hold the characters Pusher allows
there; :meth:`Channels.validate_run_id` says which when one does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, TypeVar

from config.settings import CHANNEL_NAME_PATTERN, REQUIRED_CHANNEL_PREFIX

#: Celery queues: short provider calls, and long user work (never starving the former).
BROADCAST_QUEUE = "broadcast"
WORKFLOWS_QUEUE = "workflows"

#: Celery task names: relaycast's own (routed to the broadcast queue by :data:`RELAYCAST_TASKS`,
#: but for :data:`RUN_FINISHED_TASK`, which ends a canvas run beside its workflow).
BROADCAST_TASK = "relaycast.broadcast"
HEALTH_TASK = "relaycast.health"
SWEEP_TASK = "relaycast.sweep"
OCCUPANCY_TASK = "relaycast.occupancy"
PRUNE_TASK = "relaycast.prune"
RUNS_LOST_TASK = "relaycast.runs_lost"
RUN_FINISHED_TASK = "relaycast.run_finished"
#: Route patterns: every relaycast task, every workflow and step.
RELAYCAST_TASKS = "relaycast.*"
WORKFLOW_TASKS = "workflows.*"


def workflow_task_name(name: str) -> str:
    """The Celery task of the workflow or step ``name``."""
    return f"workflows.{name}"


LOG_EVENT = "log"
#: The admin event a run begins with.
RUN_STARTED_EVENT = "started"
#: In a run's end event (``finished``, ``failed``, ...): the seq of its last line when it
#: ended (0: none). What makes an admin event a run's end for the ordering gate.
LAST_SEQ_KEY = "last_seq"
#: Runs whose ``started`` an outbox remembers until their line 1 is sent (oldest forgotten).
MAX_PENDING_STARTS = 10_000
PROVIDER_CHANGED_EVENT = "provider-changed"
HEALTH_EVENT = "health"

#: Characters Pusher allows in a channel name (and so in a run id).
RUN_ID_CHARS = "letters, digits and _ - = @ , . ;"
_RUN_ID = CHANNEL_NAME_PATTERN
#: Pusher's channel-name limit, prefixes included: the one cap on a channel name wherever an
#: outsider supplies one (``/pusher/auth``, ``/pusher/webhook``, Socket.IO ``subscribe``).
MAX_CHANNEL_CHARS = 164
#: How much of an outsider's channel name a log line or an error message repeats.
SHOWN_CHANNEL_CHARS = 64
#: The width of the ``run_id`` columns in SQL.
MAX_RUN_ID_CHARS = 128
_LOGS = "logs-"
#: relaycast's admin channels (``admin-events``, ``admin-health``) and any it adds later.
_ADMIN = "admin-"
#: Pusher's limit on an event name.
MAX_EVENT_NAME_CHARS = 200
#: Event names a transport keeps for itself: Pusher's (prefixes) and Socket.IO's (names), which
#: a browser's connector would never hand to a listener.
RESERVED_EVENT_PREFIXES = ("pusher:", "pusher_internal:")
RESERVED_EVENT_NAMES = frozenset({"connect", "connect_error", "disconnect", "disconnecting",
                                  "newListener", "removeListener"})
#: The id of an application event's message starts with this.
APP_ID_PREFIX = "app/"


T = TypeVar("T")


class InvalidRunId(ValueError):
    """A run id that cannot be part of a channel name."""


class InvalidAppChannel(ValueError):
    """An application channel name Pusher would refuse, or one of relaycast's own."""


@dataclass(frozen=True)
class Channels:
    """relaycast's channel names under one prefix (``RELAYCAST_CHANNEL_PREFIX``)."""

    prefix: str = REQUIRED_CHANNEL_PREFIX

    def logs(self, run_id: str) -> str:
        return f"{self.prefix}{_LOGS}{run_id}"

    @property
    def admin_events(self) -> str:
        return f"{self.prefix}admin-events"

    @property
    def admin_health(self) -> str:
        return f"{self.prefix}admin-health"

    @property
    def logs_prefix(self) -> str:
        """What every log channel starts with (for the providers' ``filter_by_prefix``)."""
        return f"{self.prefix}{_LOGS}"

    def run_id_of(self, channel: str) -> str | None:
        """The run whose log channel ``channel`` is; None for any other channel (including one
        whose run id is longer than any run's can be: :meth:`validate_run_id`)."""
        if len(channel) > MAX_CHANNEL_CHARS or not channel.startswith(self.logs_prefix):
            return None
        run_id = channel[len(self.logs_prefix):]
        if len(run_id) > self.max_run_id_chars:
            return None
        return run_id if _RUN_ID.fullmatch(run_id) else None

    def is_ours(self, channel: str) -> bool:
        """One of relaycast's channels: a run's logs, admin events or health."""
        return channel in (self.admin_events, self.admin_health) or self.run_id_of(channel) is not None

    def _app_problem(self, name: object) -> str | None:
        """Why ``name`` cannot be an application channel (None: it can)."""
        if not isinstance(name, str) or not _RUN_ID.fullmatch(name):
            return f"use only {RUN_ID_CHARS} (at least one)"
        full = self.prefix + name
        if len(full) > MAX_CHANNEL_CHARS:
            return (f"with the prefix {self.prefix!r} it is {len(full)} characters; Pusher allows "
                    f"{MAX_CHANNEL_CHARS}")
        if name.startswith((_LOGS, _ADMIN)):
            return ("logs-* and admin-* are relaycast's own channels (a run's logs, admin-events, "
                    "admin-health)")
        if full.startswith("private-encrypted-"):
            return "private-encrypted- channels are not supported"
        return None

    def app(self, name: str) -> str:
        """The channel an application's events named ``name`` go on: ``{prefix}{name}``;
        :class:`InvalidAppChannel` saying why when it cannot be one."""
        problem = self._app_problem(name)
        if problem is not None:
            raise InvalidAppChannel(f"invalid channel {name!r}: {problem}")
        return self.prefix + name

    def app_name_of(self, channel: str) -> str | None:
        """The application's name for ``channel`` (without the prefix); None when it is not an
        application channel (relaycast's own, another prefix, or not a valid name)."""
        if not channel.startswith(self.prefix):
            return None
        name = channel[len(self.prefix):]
        return name if self._app_problem(name) is None else None

    @property
    def max_run_id_chars(self) -> int:
        return min(MAX_RUN_ID_CHARS, MAX_CHANNEL_CHARS - len(self.logs_prefix))

    def validate_run_id(self, run_id: object) -> str:
        """``run_id`` if it can name a channel; :class:`InvalidRunId` saying why otherwise."""
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
            raise InvalidRunId(
                f"invalid run id {run_id!r}: a run id becomes part of a channel name, so use "
                f"only {RUN_ID_CHARS}")
        limit = self.max_run_id_chars
        if len(run_id) > limit:
            raise InvalidRunId(
                f"invalid run id: it is {len(run_id)} characters; at most {limit} are allowed "
                f"(SQL holds {MAX_RUN_ID_CHARS}; a channel name with the prefix "
                f"{self.prefix!r} holds {MAX_CHANNEL_CHARS - len(self.logs_prefix)})")
        return run_id


def channel_name_problem(channel: object) -> str | None:
    """Why ``channel``, as an outsider supplied it, is refused before anything else is asked
    of it (None: it is a string within :data:`MAX_CHANNEL_CHARS`). Never repeats the name."""
    if not isinstance(channel, str):
        return "a channel name must be a string"
    if len(channel) > MAX_CHANNEL_CHARS:
        return (f"channel name is {len(channel)} characters; at most {MAX_CHANNEL_CHARS} are "
                "allowed")
    return None


def shown_channel(channel: object) -> str:
    """``channel`` for a log line or an error: cut to :data:`SHOWN_CHANNEL_CHARS` characters
    (saying how long it was), unprintable characters escaped, so that an outsider's name is
    never echoed whole."""
    if not isinstance(channel, str):
        return f"<{type(channel).__name__}>"
    cut = "".join(c if c.isprintable() else repr(c)[1:-1]
                  for c in channel[:SHOWN_CHANNEL_CHARS])
    if len(channel) <= SHOWN_CHANNEL_CHARS:
        return cut
    return f"{cut}… ({len(channel)} characters)"


def message_id(run_id: str, first_seq: int, last_seq: int) -> str:
    """Stable id of the message carrying ``first_seq..last_seq`` of ``run_id``."""
    return f"{run_id}:{first_seq}-{last_seq}"


def run_of_message_id(message_id: str) -> str:
    return message_id.rsplit(":", 1)[0]


class LineEvent(TypedDict):
    """One log line as browsers receive it (and as the history endpoint returns it)."""

    seq: int
    ts: int  # epoch milliseconds
    level: str
    message: str
    data: dict[str, Any]


class RunLines(TypedDict):
    """Lines of one run, in seq order, contiguous (see :func:`contiguous`)."""

    run_id: str
    channel: str
    events: list[LineEvent]


class AdminMessage(TypedDict):
    channel: str
    event: str
    data: dict[str, Any]
    id: str


class AppMessage(TypedDict):
    """One application event (``broadcast(channel, event, data)``): ``payload`` is its data as
    JSON text, checked at the call. ``stream`` names the emitting process's events on this
    channel, numbered by ``seq`` (1, 2, ...): the ordering gate's key, as a run id is for
    lines."""

    channel: str
    event: str
    payload: str
    id: str
    stream: str
    seq: int


def app_message_id(stream: str, seq: int) -> str:
    return f"{APP_ID_PREFIX}{stream}/{seq}"


def is_app_message_id(message_id: str) -> bool:
    return message_id.startswith(APP_ID_PREFIX)


def event_name_problem(event: object) -> str | None:
    """Why ``event`` cannot name an application event (None: it can)."""
    if not isinstance(event, str) or not event:
        return "it must be a non-empty string"
    if len(event) > MAX_EVENT_NAME_CHARS:
        return f"it is {len(event)} characters; Pusher allows {MAX_EVENT_NAME_CHARS}"
    if event.startswith(RESERVED_EVENT_PREFIXES) or event in RESERVED_EVENT_NAMES:
        return ("pusher:* and pusher_internal:* (Pusher's), and connect, connect_error, "
                "disconnect, disconnecting, newListener, removeListener (Socket.IO's) are "
                "reserved")
    return None


class Batch(TypedDict):
    """The broadcast task's argument: one emitter flush (or a retry, sweep or replay of one)."""

    runs: list[RunLines]
    admin: list[AdminMessage]
    #: Publish each run's lines only after the lines before them (the ordering gate). False
    #: for sweeps and replays, whose lines are old and whose predecessors are long gone.
    ordered: NotRequired[bool]
    #: Non-live broadcasters (``log``) already took these lines: try live ones only.
    live_only: NotRequired[bool]
    #: Application events, each stream's in seq order (gated like a run's lines).
    app: NotRequired[list[AppMessage]]
    #: Runs whose line 1 is in this batch and whose ``started`` the same emitter sent before
    #: (in this batch or an earlier one): those lines go after the ``started``. A run not
    #: listed (a plain script's, or one whose ``started`` another process sent) never waits.
    after_start: NotRequired[list[str]]


def new_batch(runs: list[RunLines] | None = None, admin: list[AdminMessage] | None = None, *,
              ordered: bool = True, live_only: bool = False,
              app: list[AppMessage] | None = None) -> Batch:
    batch: Batch = {"runs": runs or [], "admin": admin or []}
    if app:
        batch["app"] = app
    if not ordered:
        batch["ordered"] = False
    if live_only:
        batch["live_only"] = True
    return batch


def is_run_start(message: AdminMessage) -> bool:
    """A run's ``started`` (with the run's id in its data)."""
    data = message["data"]
    return (message["event"] == RUN_STARTED_EVENT and isinstance(data, dict)
            and isinstance(data.get("run_id"), str))


def place_run_starts(batches: Sequence[Batch], pending: dict[str, None],
                     max_pending: int = MAX_PENDING_STARTS) -> None:
    """Make the batches of one emitter send (in enqueue order) say where runs start.

    Each ``started`` moves to the first batch (admin events ride with the last lines, which
    suits a run's end, not its start), and a batch holding line 1 of a run whose ``started``
    was sent (now, or before: ``pending``, the outbox's memory) lists the run in
    ``after_start``. ``pending`` keeps the runs whose line 1 has not been sent yet, at most
    ``max_pending`` (the oldest forgotten: such a run's first lines just do not wait)."""
    if not batches:
        return
    first = batches[0]
    for batch in batches:
        starts = [m for m in batch["admin"] if is_run_start(m)]
        for message in starts:
            pending[message["data"]["run_id"]] = None
        if starts and batch is not first:
            batch["admin"] = [m for m in batch["admin"] if not is_run_start(m)]
            first["admin"] = [*first["admin"], *starts]
    for batch in batches:
        after = [run["run_id"] for run in batch["runs"]
                 if run["events"] and run["events"][0]["seq"] == 1 and run["run_id"] in pending]
        if after:
            batch["after_start"] = after
            for run_id in after:
                pending.pop(run_id, None)
    while len(pending) > max_pending:
        pending.pop(next(iter(pending)))


def _event_seq(event: Any) -> int:
    return int(event["seq"])


def contiguous(items: Sequence[T], seq: Callable[[T], int] = _event_seq) -> list[list[T]]:
    """``items`` (one run's, in seq order) cut wherever the next seq is not the one after.

    A :class:`RunLines` holds one such piece: each is packed into messages of its own, so
    that no message (its id, the seq range SQL marks) spans lines it does not carry. Lines
    re-sent later (a retry, the sweeper, a replay) can have holes, e.g. seqs 1-10 and 21-30.
    """
    pieces: list[list[T]] = []
    for item in items:
        if pieces and seq(item) == seq(pieces[-1][-1]) + 1:
            pieces[-1].append(item)
        else:
            pieces.append([item])
    return pieces


def pack_runs(runs: Iterable[tuple[str, list[T]]], max_lines: int
              ) -> list[list[tuple[str, list[T]]]]:
    """Runs' lines in groups of at most ``max_lines`` (one broadcast task each), in order: a
    run longer than that is cut into chunks, and a chunk that would overfill a group starts
    the next one."""
    groups: list[list[tuple[str, list[T]]]] = []
    group: list[tuple[str, list[T]]] = []
    size = 0
    for run_id, items in runs:
        for start in range(0, len(items), max_lines):
            chunk = items[start:start + max_lines]
            if group and size + len(chunk) > max_lines:
                groups.append(group)
                group, size = [], 0
            group.append((run_id, chunk))
            size += len(chunk)
    if group:
        groups.append(group)
    return groups


def batch_lines(batch: Batch) -> int:
    return sum(len(run["events"]) for run in batch["runs"])


def describe_batch(batch: Batch) -> str:
    """Short text for logs and Flower: ``runs=a,b,c…, lines=N, admin=M``."""
    runs = ",".join(run["run_id"] for run in batch["runs"][:3])
    more = "…" if len(batch["runs"]) > 3 else ""
    app = f", app={len(batch['app'])}" if batch.get("app") else ""
    return f"runs={runs}{more}, lines={batch_lines(batch)}, admin={len(batch['admin'])}{app}"
