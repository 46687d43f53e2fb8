"""Building the broadcasters and the manager from :class:`config.Settings`."""

from __future__ import annotations

import time
from collections.abc import Callable

from broadcasters.base import Broadcaster
from broadcasters.log import LogBroadcaster
from broadcasters.manager import BroadcasterManager
from broadcasters.state import SharedState, state_from_url
from broadcasters.wire import Channels
from config import Settings


def broadcaster_class(name: str) -> type[Broadcaster]:
    """The class behind a broadcaster name (provider SDKs are imported only when asked for)."""
    if name == "pusher":
        from broadcasters.pusher import PusherBroadcaster

        return PusherBroadcaster
    if name == "ably":
        from broadcasters.ably import AblyBroadcaster

        return AblyBroadcaster
    if name == "socketio":
        from broadcasters.socket_io import SocketIOBroadcaster

        return SocketIOBroadcaster
    if name == "log":
        return LogBroadcaster
    raise ValueError(f"no broadcaster called {name!r}")


def is_live(name: str) -> bool:
    """Does a delivery by ``name`` reach browsers?"""
    return broadcaster_class(name).live


def build_broadcaster(name: str, settings: Settings) -> Broadcaster:
    return broadcaster_class(name).from_settings(settings)


def build_state(settings: Settings, *, clock: Callable[[], float] = time.time) -> SharedState:
    return state_from_url(settings.redis_url, settings.state_prefix, clock=clock)


def build_manager(settings: Settings, state: SharedState | None = None, *,
                  clock: Callable[[], float] = time.time) -> BroadcasterManager:
    """The manager for ``settings.broadcaster_order`` over shared state (Redis when configured).

    ``clock`` (wall time) is the manager's and, when it builds the state, the state's."""
    return BroadcasterManager(
        [build_broadcaster(name, settings) for name in settings.broadcaster_order],
        state if state is not None else build_state(settings, clock=clock),
        quota_disable_s=settings.quota_disable_s,
        flag_cache_ms=settings.flag_cache_ms,
        control_channel=Channels(settings.channel_prefix).admin_events,
        mirror=build_broadcaster(settings.mirror, settings) if settings.mirror else None,
        clock=clock,
    )
