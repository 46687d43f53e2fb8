"""``relaycast socketio`` as a subprocess, and a python-socketio client recording what it gets."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import socketio

from support.servers import _ChildProcess, free_port
from support.workers import project_env


class SocketIOServer(_ChildProcess):
    """``python -m relaycast socketio --port P`` with its own environment; restartable on the
    same port; waits until it answers ``/healthz``."""

    _name = "socketio"

    def __init__(self, env: dict[str, str], *args: str, port: int | None = None) -> None:
        super().__init__()
        self.env = project_env(env)
        self.args = args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        if self.is_running():
            return
        workdir = self._new_workdir()
        self._spawn([sys.executable, "-m", "relaycast", "socketio", "--port", str(self.port),
                     *self.args], workdir, env=self.env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_running():
                raise self._fail(RuntimeError, "relaycast socketio exited during start-up")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise self._fail(TimeoutError, f"relaycast socketio did not answer within {timeout_s}s")


class SocketIOClient:
    """One python-socketio client subscribed to one channel; records (event, data, at)."""

    def __init__(self, url: str, channel: str, *, token: str | None = None) -> None:
        self.channel = channel
        self.events: list[tuple[str, Any, float]] = []
        self._lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)
        self.client.on("*", self._record)
        self.client.connect(url, transports=["websocket"], auth={"token": token} if token else None,
                            wait_timeout=10)
        self.ack = self.client.call("subscribe", {"channel": channel}, timeout=10)

    def _record(self, event: str, data: Any = None) -> None:
        with self._lock:
            self.events.append((event, data, time.monotonic()))

    def of(self, event: str) -> list[Any]:
        with self._lock:
            return [data for name, data, _ in self.events if name == event]

    def seqs(self) -> list[int]:
        return [line["seq"] for data in self.of("log") for line in data["events"]]

    def wait_for(self, condition: Callable[[], bool], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not met within {timeout_s}s; {len(self.events)} events, "
                                     f"last: {self.events[-3:]}")
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
