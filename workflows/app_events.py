"""Application events: ``broadcast(channel, event, data)`` pushes an app's own event to browsers.

    from relaycast import broadcast
    broadcast("orders", "shipped", {"order_id": 42, "carrier": "DHL"})
    broadcast(f"progress-{job_id}", "progress", {"percent": 40})

Like Laravel's ``broadcast(new OrderShipped)``, over the same path as log lines: the
emitter's next flush carries the event in its broadcast task; the broadcast worker's
manager sends it through the first broadcaster that takes it (fallback, retries with
backoff, the shared quota flags), and counts it in the health report (``app events:
sent / failed / dead-lettered`` in ``relaycast status``; ``app_events_*`` in ``--json``).
A browser listens with ``channel(name).listen(event, callback)`` (``relaycast.js``).

* **Channel.** ``channel`` is a name under ``RELAYCAST_CHANNEL_PREFIX``: the event is
  published on ``{prefix}{channel}`` (``private-orders`` by default), a private channel that
  ``/pusher/auth`` signs for the admin token or session, or for whom
  ``RELAYCAST_CHANNEL_AUTHORIZER`` allows. Pusher's rules apply: letters, digits and
  ``_ - = @ , . ;``, at most 164 characters with the prefix; names of relaycast's own
  channels (``logs-*``, and ``admin-*``: ``admin-events``, ``admin-health`` and any it adds)
  are refused.
* **Event.** 1 to 200 characters (Pusher's limit); names the transports keep for themselves
  are refused: ``pusher:*`` and ``pusher_internal:*``, and Socket.IO's ``connect``,
  ``connect_error``, ``disconnect``, ``disconnecting``, ``newListener``, ``removeListener``.
* **Data.** Anything :func:`json.dumps` encodes as strict JSON (no NaN or infinity), at most
  ``RELAYCAST_PUSHER_MAX_EVENT_BYTES`` (10,000 by default: Pusher's 10 KB per event) as
  compact UTF-8 JSON. Subscribers receive it as given. It is encoded at the call, so changing
  the object afterwards changes nothing.

A call that breaks one of these rules raises :class:`ValueError` naming the problem — a
mistake in the calling code, found where it is made. That is the one exception to "never
raises into the workflow": once the call has returned, nothing about delivery ever raises.

**Order.** Events one process emits on one channel reach subscribers in emit order, even with
several broadcast workers: each gets the next number of its stream (the process's events on
that channel) and passes the same ordering gate as a run's lines (bounded wait, then
published anyway). Events from different processes on one channel are not ordered against
each other. A retried event (after a provider failure) may arrive after later ones, and a
worker crash may deliver one twice.

**Not stored.** Unlike log lines, app events are in no database: no history, no replay, and
the viewer's polling fallback cannot deliver them. They are never dropped silently: an event
that no broadcaster takes for good (retries ran out, or refused as too large) is
dead-lettered — logged at ERROR with its channel, event and id by the broadcast worker and
counted (``app_events_dead_lettered``, a problem in the health report); one given up in the
emitting process (broker unreachable past the buffer's bound) is counted in the emitter's
``app_dropped`` and logged.
"""

from __future__ import annotations

import json
from typing import Any

from broadcasters.base import without_lone_surrogates
from broadcasters.wire import InvalidAppChannel, event_name_problem
from workflows.process import get_emitter

__all__ = ["InvalidAppChannel", "broadcast"]


def broadcast(channel: str, event: str, data: Any) -> None:
    """Publish ``event`` with ``data`` on the app channel ``channel`` (see the module docs).

    Raises :class:`ValueError` for a channel, event name or data that cannot be sent; once
    it returns, the event is on its way and nothing raises.
    """
    emitter = get_emitter()
    full = emitter.channels.app(channel)
    problem = event_name_problem(event)
    if problem is not None:
        raise ValueError(f"invalid event name {event!r}: {problem}")
    try:
        payload = without_lone_surrogates(
            json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data of event {event!r} on {channel!r} is not JSON-serialisable: "
                         f"{exc}") from None
    size = len(payload.encode("utf-8"))
    limit = emitter.app_event_max_bytes
    if size > limit:
        raise ValueError(f"data of event {event!r} on {channel!r} is {size} bytes as JSON; at "
                         f"most {limit} are allowed (RELAYCAST_PUSHER_MAX_EVENT_BYTES, Pusher's "
                         "10 KB per event)")
    emitter.emit_app(full, event, payload)
