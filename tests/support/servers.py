"""Real backing servers for the test-suite: a private redis-server and soketi.

Both run as child processes in their own session (process group) and log to a
temporary file (never to a PIPE nobody reads).  Neither touches the system
redis on port 6379: every instance gets its own free port, refuses to start on
a port something already listens on, and the redis wrapper checks that the
server answering on its port is the process it started.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol, Self

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO_ROOT / "tools"
SOKETI_BIN = TOOLS_DIR / "node_modules" / ".bin" / "soketi"

_LOG_TAIL_CHARS = 4000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on ``host:port`` (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _tail(path: Path | None, limit: int = _LOG_TAIL_CHARS) -> str:
    if path is None:
        return "<no log>"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return _ANSI.sub("", text)[-limit:]


def _stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the child's whole process group, SIGKILL it if it lingers, reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout_s)


class _ChildProcess:
    """Shared plumbing: a temp dir, a log file and one child process group."""

    _name = "server"

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: Path | None = None
        self._log_path: Path | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _new_workdir(self) -> Path:
        """A fresh temp dir (the previous one is removed) holding the log file."""
        self._cleanup_files()
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f"relaycast-{self._name}-"))
        self._log_path = self._tmpdir / f"{self._name}.log"
        return self._tmpdir

    def _spawn(
        self, cmd: list[str], workdir: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        assert self._log_path is not None
        if self._log_file is not None:  # the previous process ended by itself (a crash)
            self._log_file.close()
        self._log_file = self._log_path.open("wb")
        self._proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self._proc

    def stop(self) -> None:
        """Stop the process (SIGTERM to its group, SIGKILL after 10 s); keep the log."""
        if self._proc is not None:
            _stop_process_group(self._proc)
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, limit: int = _LOG_TAIL_CHARS) -> str:
        """The last ``limit`` characters of the server's output (ANSI colours removed)."""
        return _tail(self._log_path, limit)

    def _fail(self, exc_type: type[Exception], message: str) -> Exception:
        """Stop, clean up and build an exception carrying the tail of the output."""
        log = self.log_tail()
        self.close()
        return exc_type(f"{message}\n--- {self._name} output ---\n{log}")

    def _cleanup_files(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self._log_path = None

    def close(self) -> None:
        """Stop the server and delete its temporary directory."""
        self.stop()
        self._cleanup_files()

    def start(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisServer(_ChildProcess):
    """A private, non-persistent redis-server bound to 127.0.0.1.

    ``stop()`` followed by ``start()`` reuses the same port, so clients
    configured with ``url`` reconnect to the restarted (empty) server.
    """

    _name = "redis"

    def __init__(self, port: int | None = None, binary: str = "redis-server",
                 persistent: bool = False) -> None:
        super().__init__()
        #: Append-only file, fsync on every write, kept across stop()/start(): a broker
        #: that survives a restart, as production Redis brokers are configured.
        self.persistent = persistent
        resolved = shutil.which(binary)
        if resolved is None:
            raise FileNotFoundError(f"{binary!r} not found on PATH")
        self.binary: str = resolved
        self.host: str = "127.0.0.1"
        self.port: int = port if port is not None else free_port()
        self.url: str = f"redis://{self.host}:{self.port}/0"

    def _command(self, command: bytes, timeout_s: float) -> bytes:
        with socket.create_connection((self.host, self.port), timeout=timeout_s) as sock:
            sock.sendall(command + b"\r\n")
            chunks: list[bytes] = []
            while True:
                chunk = sock.recv(65536)
                chunks.append(chunk)
                data = b"".join(chunks)
                if not chunk or _resp_complete(data):
                    return data

    def ping(self, timeout_s: float = 1.0) -> bool:
        """True if something answers PING with +PONG on our port."""
        try:
            return self._command(b"PING", timeout_s).startswith(b"+PONG")
        except OSError:
            return False

    def _server_pid(self, timeout_s: float = 1.0) -> int | None:
        try:
            info = self._command(b"INFO server", timeout_s)
        except OSError:
            return None
        match = re.search(rb"process_id:(\d+)", info)
        return int(match.group(1)) if match else None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start redis-server and wait (``timeout_s`` max) until it answers PING."""
        if self.is_running():
            return
        if not port_is_free(self.port, self.host):
            raise OSError(f"cannot start redis-server: port {self.port} is already in use")
        workdir = self._tmpdir if self.persistent and self._tmpdir is not None else self._new_workdir()
        durability = (("--appendonly", "yes", "--appendfsync", "always") if self.persistent
                      else ("--appendonly", "no"))
        proc = self._spawn(
            [
                self.binary,
                *("--port", str(self.port)),
                *("--bind", self.host),
                *("--save", ""),
                *durability,
                *("--dir", str(workdir)),
                *("--daemonize", "no"),
            ],
            workdir,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise self._fail(RuntimeError, f"redis-server on port {self.port} exited early")
            if self.ping(timeout_s=0.5):
                pid = self._server_pid()
                if pid != proc.pid:
                    raise self._fail(
                        RuntimeError,
                        f"port {self.port} is answered by redis pid {pid}, not ours ({proc.pid})",
                    )
                return
            time.sleep(0.05)
        raise self._fail(TimeoutError, f"redis-server on port {self.port} did not answer PING")

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.is_running()})"


def _resp_complete(data: bytes) -> bool:
    """Enough of a RESP reply for PING (+PONG) and INFO (one bulk string)."""
    if data[:1] in (b"+", b"-", b":"):
        return data.endswith(b"\r\n")
    if data[:1] == b"$":
        head, sep, rest = data.partition(b"\r\n")
        if not sep:
            return False
        length = int(head[1:])
        return length < 0 or len(rest) >= length + 2
    return bool(data)


def soketi_available() -> bool:
    """True when ``npm ci`` has been run in tools/ and node is on PATH."""
    return SOKETI_BIN.exists() and shutil.which("node") is not None


class Soketi(_ChildProcess):
    """A soketi (Pusher-protocol) server configured purely through env vars.

    Runs with its working directory in a temp dir because soketi calls
    ``dotenv.config()`` and would otherwise read a ``.env`` from the cwd.
    Env values are JSON-parsed by soketi, so a key or secret such as ``"123"``
    or ``"true"`` would stop being a string: keep them non-numeric.
    """

    _name = "soketi"

    def __init__(
        self,
        app_id: str = "1",
        key: str = "app-key",
        secret: str = "app-secret",
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__()
        if not app_id.isdigit():
            raise ValueError("soketi app ids used by the tests must be digits")
        self.host: str = "127.0.0.1"
        self._fixed_port = port is not None
        self.port: int = port if port is not None else free_port()
        self.metrics_port: int = free_port()
        self.app_id: str = app_id
        self.key: str = key
        self.secret: str = secret
        self.extra_env: dict[str, str] = dict(extra_env or {})

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """relaycast settings that point the project at this server."""
        return {
            "PUSHER_APP_ID": self.app_id,
            "PUSHER_KEY": self.key,
            "PUSHER_SECRET": self.secret,
            "PUSHER_HOST": self.host,
            "PUSHER_PORT": str(self.port),
            "PUSHER_SSL": "false",
        }

    def _process_env(self) -> dict[str, str]:
        # Inherit PATH/HOME etc. but never a stray SOKETI_* from the caller's shell.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOKETI_")}
        env.update(
            {
                "SOKETI_HOST": self.host,
                "SOKETI_PORT": str(self.port),
                "SOKETI_METRICS_HOST": self.host,
                "SOKETI_METRICS_SERVER_PORT": str(self.metrics_port),
                "SOKETI_DEFAULT_APP_ID": self.app_id,
                "SOKETI_DEFAULT_APP_KEY": self.key,
                "SOKETI_DEFAULT_APP_SECRET": self.secret,
                # The default 3 s grace period on SIGTERM only slows the tests down.
                "SOKETI_SHUTDOWN_GRACE_PERIOD": "0",
            }
        )
        env.update(self.extra_env)
        return env

    def _answers(self) -> bool:
        # requests, not urllib: a server that accepts the connection and drops it while it
        # starts makes urllib raise from getresponse() with its socket left open.
        try:
            return bool(requests.get(f"{self.url}/", timeout=1.0).status_code == 200)
        except requests.RequestException:
            return False

    def start(self, timeout_s: float = 20.0) -> None:
        """Start soketi and wait (``timeout_s`` max) until ``GET /`` answers."""
        if self.is_running():
            return
        if not soketi_available():
            raise FileNotFoundError(
                f"soketi is not installed: run `npm ci` in {TOOLS_DIR} (and install node)"
            )
        node = shutil.which("node")
        assert node is not None
        # soketi reports "Server is up and running" even when it could not listen,
        # and GET / would then be answered by whoever holds the port: check first.
        if not port_is_free(self.port, self.host):
            if self._fixed_port:
                raise OSError(f"cannot start soketi: port {self.port} is already in use")
            self.port = free_port()
        if not port_is_free(self.metrics_port, self.host):
            self.metrics_port = free_port()
        workdir = self._new_workdir()
        proc = self._spawn([node, str(SOKETI_BIN), "start"], workdir, env=self._process_env())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise self._fail(RuntimeError, f"soketi on port {self.port} exited early")
            if self._answers():
                return
            time.sleep(0.1)
        raise self._fail(TimeoutError, f"soketi on port {self.port} did not answer within {timeout_s}s")

    def __repr__(self) -> str:
        return f"Soketi(port={self.port}, app_id={self.app_id!r}, running={self.is_running()})"


class SoketiFactory(Protocol):
    """Type of the ``soketi_factory`` fixture: starts a Soketi, stopped at teardown."""

    def __call__(
        self,
        extra_env: dict[str, str] | None = None,
        app_id: str = "1",
        key: str = "app-key",
        secret: str = "app-secret",
    ) -> Soketi: ...
