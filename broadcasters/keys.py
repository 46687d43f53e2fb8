"""Every shared-state key and counter name, defined once (after arq's ``constants.py``).

Writers and readers both build their names here, so a key or counter cannot be written under
one spelling and read under another. Keys are relative to the state prefix
(``RELAYCAST_STATE_PREFIX``, ``relaycast:`` by default), which the backend adds
(:mod:`broadcasters.backends`). What is stored under each, and for how long:

==========================  =========  ============================================================
key                         type       holds
==========================  =========  ============================================================
``disabled:{broadcaster}``  string     its disabled flag (JSON), until its ``until`` or a week
``paused:{broadcaster}``    string     its pause after a rate limit (JSON), until the pause ends
``active``                  string     the broadcaster carrying traffic (swapped atomically)
``stats:{name}:{minute}``   hash       one broadcaster's counters of one minute (:class:`StatField`)
``usage:{name}:{day}``      hash       one broadcaster's messages and requests of one UTC day
``outcome:{name}``          hash       when it last delivered / failed, and why
``pipeline:{minute}``       hash       pipeline counters of one minute (:class:`PipelineCounter`)
``{daily}:{day}``           hash       a daily counter (``unwatched``: :data:`UNWATCHED`)
``totals:{stem}``           hash       running totals of ``stats:{name}``, ``pipeline``, ``unwatched``
``health:latest``           string     the latest health report (JSON)
``occupancy``               hash       channel → ``{time_ms}:{0|1}``, and ``~reconciled_at``
``gate:{lane}``             string     an ordering gate: the last seq of the lane that had its turn
``runs:alive:{run_id}``     string     a run's latest heartbeat (epoch seconds)
``alert:health``            string     the health last observed for alerts: ``{epoch}|{state}``
``alert:broadcaster:{b}``   string     a broadcaster's state last observed for alerts (same form)
``alert:quota:{b}:{day}``   string     the quota level last observed for alerts (``0``/``80``/``100``)
==========================  =========  ============================================================

``{minute}`` is epoch seconds // 60; ``{day}`` is ``YYYY-MM-DD`` (UTC); ``{lane}`` a run id or
``app/{stream}`` (:func:`app_lane`); ``{name}`` a broadcaster, or ``mirror:{broadcaster}``
for a mirror's copies.
Changing any of these strings orphans what running deployments have stored: don't.
"""

from __future__ import annotations

from enum import StrEnum

#: The default state prefix (``RELAYCAST_STATE_PREFIX``); backends put it before every key.
DEFAULT_PREFIX = "relaycast:"

# Flags and the active broadcaster -----------------------------------------------------------

DISABLED = "disabled:"
PAUSED = "paused:"
ACTIVE = "active"


def disabled(broadcaster: str) -> str:
    return DISABLED + broadcaster


def paused(broadcaster: str) -> str:
    return PAUSED + broadcaster


# Per-broadcaster counters and outcomes ------------------------------------------------------

STATS = "stats:"
USAGE = "usage:"
OUTCOME = "outcome:"
#: Before a broadcaster's name: the counters of its mirror's copies (``RELAYCAST_MIRROR``).
MIRROR = "mirror:"


def mirror(broadcaster: str) -> str:
    """The name a mirror's counters and outcome are kept under."""
    return MIRROR + broadcaster


def stats(name: str) -> str:
    """The stem of ``name``'s minute buckets (``stats:{name}``; :func:`per_minute` ends it)."""
    return STATS + name


def usage(name: str) -> str:
    """The stem of ``name``'s daily usage (``usage:{name}``; :func:`per_day` ends it)."""
    return USAGE + name


def outcome(name: str) -> str:
    return OUTCOME + name


class StatField(StrEnum):
    """Fields of a broadcaster's minute bucket (``stats:{name}:{minute}``)."""

    SENT = "sent"
    REQUESTS = "requests"
    SKIPPED = "skipped"
    LATENCY_SUM_MS = "lat_sum_ms"


#: Before an error category: failures of that category (``failed:quota``).
FAILED = "failed:"
#: Before a latency bucket's upper bound: requests in that bucket (``lat:50``).
LATENCY = "lat:"


def failed(category: str) -> str:
    return FAILED + category


def latency(bound_ms: int) -> str:
    return f"{LATENCY}{bound_ms}"


class UsageField(StrEnum):
    """Fields of a broadcaster's daily usage (``usage:{name}:{day}``)."""

    MESSAGES = "messages"
    REQUESTS = "requests"


class OutcomeField(StrEnum):
    """Fields of a broadcaster's outcome (``outcome:{name}``)."""

    OK_AT = "ok_at"
    ERROR_AT = "error_at"
    ERROR = "error"


# Pipeline counters ---------------------------------------------------------------------------

PIPELINE = "pipeline"


class PipelineCounter(StrEnum):
    """Pipeline-wide counters of one minute (``pipeline:{minute}``) that the health report
    reads: each is ``PipelineHealth.{counter}_last_hour`` (some also ``..._interval``)."""

    #: Broadcast tasks run (retries included), and the lines they carried.
    BROADCAST_TASKS = "broadcast_tasks"
    BROADCAST_LINES = "broadcast_lines"
    #: Batches dead-lettered (retries ran out, or nothing live can take them).
    DEAD_LETTERED = "dead_lettered"
    #: Lines emitters dropped from a full buffer.
    LINES_DROPPED = "lines_dropped"
    #: Batches whose wait at the ordering gate ran out.
    GATE_TIMEOUTS = "gate_timeouts"
    #: Application events delivered, not delivered by an attempt, and given up.
    APP_EVENTS_SENT = "app_events_sent"
    APP_EVENTS_FAILED = "app_events_failed"
    APP_EVENTS_DEAD_LETTERED = "app_events_dead_lettered"
    #: Alerts the webhook took (2xx), and alerts given up after their retries.
    ALERTS_SENT = "alerts_sent"
    ALERTS_FAILED = "alerts_failed"


#: Every pipeline counter of the ordering gate starts with this (the benchmarks read them all).
GATE = "gate_"


class GateCounter(StrEnum):
    """The ordering gate's own pipeline counters, for the benchmarks (not in the report)."""

    BATCHES = "gate_batches"
    WAIT_MS = "gate_wait_ms"


#: Before a bucket's upper bound (ms): the gate-wait histogram's counters.
GATE_WAIT_LE = "gate_wait_le_"


def gate_wait_le(bucket_ms: int) -> str:
    """The gate-wait histogram's counter of batches that waited at most ``bucket_ms``."""
    return f"{GATE_WAIT_LE}{bucket_ms}"


def gate_wait_bucket(counter: str) -> int | None:
    """The bucket (ms) of a gate-wait histogram counter; None for any other counter."""
    if not counter.startswith(GATE_WAIT_LE):
        return None
    return int(counter.removeprefix(GATE_WAIT_LE))


def is_gate_counter(name: str) -> bool:
    return name.startswith(GATE)


# Daily counters ------------------------------------------------------------------------------

#: Lines not published because nobody watched their run (occupancy gating), and the
#: messages they would have cost: fields :data:`UNWATCHED_LINES`, :data:`UNWATCHED_MESSAGES`.
UNWATCHED = "unwatched"
UNWATCHED_LINES = "lines"
UNWATCHED_MESSAGES = "messages"


def per_minute(stem: str, minute: int) -> str:
    """One minute's bucket of ``stem`` (``stats:{name}``, ``pipeline``)."""
    return f"{stem}:{minute}"


def per_day(stem: str, day: str) -> str:
    """One UTC day's bucket of ``stem`` (``usage:{name}``, ``unwatched``)."""
    return f"{stem}:{day}"


#: Before a stem: its running totals since the key was created (what ``GET /metrics`` exposes
#: as Prometheus counters): every field added to a minute's or a day's bucket of ``stem`` is
#: added here too. Kept for :data:`~broadcasters.counters.TOTALS_TTL_S` after the last write.
TOTALS = "totals:"


def totals(stem: str) -> str:
    """The running totals of ``stem`` (``stats:{name}``, ``pipeline``, ``unwatched``)."""
    return TOTALS + stem


#: Before a bucket's upper bound (ms): the emit-to-publish histogram's pipeline counters
#: (lines delivered live that waited at most that long since they were emitted).
PUBLISH_LAG_LE = "publish_lag_le_"
#: The emit-to-publish histogram's sum (milliseconds), a pipeline counter.
PUBLISH_LAG_SUM_MS = "publish_lag_sum_ms"


def publish_lag_le(bucket_ms: int) -> str:
    return f"{PUBLISH_LAG_LE}{bucket_ms}"


# Documents, occupancy, ordering gates, heartbeats --------------------------------------------

HEALTH_LATEST = "health:latest"

OCCUPANCY = "occupancy"
#: When the last reconciliation succeeded (epoch seconds), kept in the occupancy hash so that
#: a broadcast reads both in one round trip; ``~`` is in no channel name.
OCCUPANCY_RECONCILED = "~reconciled_at"

GATE_KEY = "gate:"
#: Before a stream's name: its application events' lane at the ordering gate (``/`` never
#: occurs in a run id, so no run's lane can look like one).
APP_LANE = "app/"


def gate(lane: str) -> str:
    """A lane's ordering gate (``lane``: a run id, or :func:`app_lane`)."""
    return GATE_KEY + lane


def app_lane(stream: str) -> str:
    return APP_LANE + stream


#: Before a run id: the run's latest heartbeat (:mod:`workflows.heartbeat`).
RUN_ALIVE = "runs:alive:"


def run_alive(run_id: str) -> str:
    return RUN_ALIVE + run_id


# Alerts ------------------------------------------------------------------------------------------

#: Before a subject: the state alerts last observed for it (:mod:`broadcasters.alerts`). Each is
#: advanced by one atomic step (:meth:`~broadcasters.backends.StateBackend.advance_many`), so
#: that of several health tasks observing one change exactly one sends its alert.
ALERT = "alert:"
ALERT_HEALTH = ALERT + "health"
ALERT_BROADCASTER = ALERT + "broadcaster:"
ALERT_QUOTA = ALERT + "quota:"


def alert_broadcaster(name: str) -> str:
    return ALERT_BROADCASTER + name


def alert_quota(name: str, day: str) -> str:
    """The quota level of ``name`` observed on ``day`` (a new UTC day starts from nothing)."""
    return f"{ALERT_QUOTA}{name}:{day}"
