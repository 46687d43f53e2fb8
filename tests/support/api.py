"""relaycast's own servers as subprocesses (uvicorn): ``relaycast api`` and ``relaycast
socketio``, for tests that need the real HTTP server."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import requests

from support.servers import _ChildProcess, free_port
from support.workers import project_env


class RelaycastServer(_ChildProcess):
    """``python -m relaycast COMMAND --port P`` with its own environment (in ``cwd``, where a
    user's workflow modules are found, if given); restartable on the same port; waits until
    ``/healthz`` answers."""

    command = "api"

    def __init__(self, env: dict[str, str], *args: str, port: int | None = None,
                 cwd: Path | None = None) -> None:
        super().__init__()
        self.env = project_env(env)
        self.args = args
        self.cwd = cwd
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        if self.is_running():
            return
        workdir = self._new_workdir()
        self._spawn([sys.executable, "-m", "relaycast", self.command, "--port", str(self.port),
                     *self.args], self.cwd or workdir, env=self.env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_running():
                raise self._fail(RuntimeError, f"relaycast {self.command} exited during start-up")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise self._fail(TimeoutError, f"relaycast {self.command} did not answer within {timeout_s}s")


class ApiServer(RelaycastServer):
    _name = "api"
    command = "api"


class SocketIOServer(RelaycastServer):
    _name = "socketio"
    command = "socketio"


__all__ = ["ApiServer", "RelaycastServer", "SocketIOServer"]
