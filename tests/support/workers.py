"""Real ``celery -A relaycast worker`` subprocesses, and a slow forwarding proxy for provider calls.

Workers, beat and the CLI get ``RELAYCAST_WORKFLOWS=workflows.examples`` unless a test says
otherwise (production registers no examples): most tests run the example workflows."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import requests

from support.servers import REPO_ROOT, _ChildProcess

#: Celery's console script, as the README runs it (``python -m celery`` would also put the
#: current directory first on sys.path for the whole process).
CELERY = str(Path(sys.executable).parent / "celery")
_PROJECT_PREFIXES = ("PUSHER_", "ABLY_", "RELAYCAST_", "REDIS_URL", "DATABASE_URL", "CELERY_")


#: The workflows tests' workers and CLI know unless a test names others.
EXAMPLES = {"RELAYCAST_WORKFLOWS": "workflows.examples"}


def project_env(overrides: dict[str, str]) -> dict[str, str]:
    """This process's environment without relaycast variables, plus ``overrides``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_PROJECT_PREFIXES)}
    return {**base, **overrides}


def with_examples(env: dict[str, str]) -> dict[str, str]:
    """``env`` knowing the example workflows, unless it names its own."""
    return {**EXAMPLES, **env}


def run_python(*argv: str, env: dict[str, str], cwd: Path | None = None,
               timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """``python ARGV`` with this process's environment less relaycast's, plus ``env``."""
    return subprocess.run([sys.executable, *argv], env=project_env(env), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed on stderr (no traceback), for a closer look."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def relaycast_cli(*args: str, env: dict[str, str], cwd: Path | None = None,
                  timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """The ``relaycast`` command line in a subprocess (knowing the examples)."""
    return run_python("-m", "relaycast", *args, env=with_examples(env), cwd=cwd,
                      timeout_s=timeout_s)


class _Startable(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...


class Started:
    """The processes (workers, beat) a test started: each is started as it is added and all
    are closed at teardown, in the order they were started."""

    def __init__(self) -> None:
        self._processes: list[_Startable] = []

    def start(self, *processes: _Startable) -> None:
        for process in processes:
            self._processes.append(process)  # closed even if its start fails
            process.start()

    def close(self) -> None:
        for process in self._processes:
            process.close()


class CeleryWorker(_ChildProcess):
    """``celery -A relaycast worker`` with its own environment (knowing the examples unless
    ``env`` names RELAYCAST_WORKFLOWS); waits until it is ready."""

    _name = "worker"

    def __init__(self, env: dict[str, str], queues: str = "broadcast,workflows",
                 concurrency: int = 2, name: str = "w1", pool: str = "prefork",
                 cwd: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.env = project_env(with_examples(env))
        self.cwd = cwd
        self.extra_args = extra_args
        self.queues = queues
        self.concurrency = concurrency
        self.name = name
        self.pool = pool

    def start(self, timeout_s: float = 60.0) -> None:
        if self.is_running():
            return
        workdir = self._new_workdir()
        self._spawn([
            CELERY, "-A", "relaycast", "worker",
            "-Q", self.queues, "-c", str(self.concurrency), "-P", self.pool,
            "-n", f"{self.name}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-l", "INFO", "-E", *self.extra_args,
        ], self.cwd or workdir, env=self.env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if " ready." in self.log_tail(200_000):
                return
            if not self.is_running():
                raise self._fail(RuntimeError, "celery worker exited during start-up")
            time.sleep(0.1)
        raise self._fail(TimeoutError, f"celery worker not ready within {timeout_s}s")

    def children(self) -> list[int]:
        """PIDs of the prefork pool processes."""
        assert self.pid is not None
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True,
                             check=False)
        return [int(p) for p in out.stdout.split()]

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool) at once: a crash, not a shutdown."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def start_again(self, timeout_s: float = 60.0) -> None:
        """Start after stop()/kill(), keeping the earlier log for diagnosis."""
        previous = self.log_tail(200_000)
        self.start(timeout_s)
        self.previous_log = previous


class ForwardingProxy:
    """Forwards every request to ``target`` (e.g. soketi), after ``delay_s``, unless a scripted
    fault answers instead: a slow provider (so a test can kill a worker mid-batch) or a
    provider that runs out of quota once, in front of a real server subscribers listen to."""

    def __init__(self, target: str, delay_s: float = 0.0, jitter_s: float = 0.0) -> None:
        self.target = target.rstrip("/")
        self.delay_s = delay_s
        #: A random extra delay up to this, per request: requests sent in one order can
        #: reach the server in another (as over any real network).
        self.jitter_s = jitter_s
        self.requests = 0
        #: (monotonic time, channel, event name) of every event a forwarded batch carried.
        self.published: list[tuple[float, str, str]] = []
        #: While True, every request is answered 503 (a load balancer before a dead server).
        self.down = False
        self._faults: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self) -> None:
                with proxy._lock:
                    proxy.requests += 1
                    fault = proxy._faults.pop(0) if proxy._faults else None
                    if fault is None and proxy.down:
                        fault = (503, "Service unavailable (the test stopped the provider)")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if fault is None and self.path.split("?")[0].endswith("/batch_events"):
                    now = time.monotonic()
                    events = json.loads(body or b"{}").get("batch", [])
                    with proxy._lock:
                        proxy.published.extend((now, e.get("channel", ""), e.get("name", ""))
                                               for e in events)
                if fault is not None:
                    self._answer(fault[0], "text/plain", fault[1].encode())
                    return
                time.sleep(proxy.delay_s + random.random() * proxy.jitter_s)
                try:
                    answer = requests.request(
                        self.command, proxy.target + self.path, data=body, timeout=10,
                        headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                except requests.RequestException as exc:
                    self._answer(502, "text/plain", f"upstream unreachable: {exc}".encode())
                    return
                self._answer(answer.status_code, answer.headers.get("Content-Type", "text/plain"),
                             answer.content)

            do_GET = do_POST = _forward  # noqa: N815

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the client (a worker being killed) hung up: expected here

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def published_to(self, channel: str, event: str | None = None) -> list[float]:
        """When events were forwarded to ``channel`` (of ``event``, if given)."""
        with self._lock:
            return [at for at, c, name in self.published
                    if c == channel and (event is None or name == event)]

    def fail_next(self, status: int, body: str, times: int = 1) -> None:
        with self._lock:
            self._faults.extend([(status, body)] * times)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class CeleryBeat(_ChildProcess):
    """``celery -A relaycast beat`` with its own schedule file."""

    _name = "beat"

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__()
        self.env = project_env(with_examples(env))

    def start(self, timeout_s: float = 30.0) -> None:
        workdir = self._new_workdir()
        self._spawn([CELERY, "-A", "relaycast", "beat", "-l", "INFO",
                     "-s", str(workdir / "schedule")], workdir, env=self.env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "beat: Starting..." in self.log_tail(100_000):
                return
            if not self.is_running():
                raise self._fail(RuntimeError, "celery beat exited during start-up")
            time.sleep(0.1)
        raise self._fail(TimeoutError, f"celery beat not started within {timeout_s}s")


__all__ = ["CELERY", "EXAMPLES", "REPO_ROOT", "CeleryBeat", "CeleryWorker", "ForwardingProxy",
           "one_line_error", "project_env", "relaycast_cli", "run_python", "with_examples"]
