"""``relaycast api`` as a subprocess (uvicorn), for tests that need the real HTTP server."""

from __future__ import annotations

import sys
import time

import requests

from support.servers import _ChildProcess, free_port
from support.workers import project_env


class ApiServer(_ChildProcess):
    """``python -m relaycast api --port P`` with its own environment; waits until it answers."""

    _name = "api"

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
        self._spawn([sys.executable, "-m", "relaycast", "api", "--port", str(self.port), *self.args],
                    workdir, env=self.env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_running():
                raise self._fail(RuntimeError, "relaycast api exited during start-up")
            try:
                requests.get(self.url + "/ui/config", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise self._fail(TimeoutError, f"relaycast api did not answer within {timeout_s}s")


__all__ = ["ApiServer"]
