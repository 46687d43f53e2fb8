"""A scriptable local HTTP server for injecting faults into provider SDKs.

Point the real pusher (or ably) SDK at it with PUSHER_HOST/PUSHER_PORT and
PUSHER_SSL=false, script answers with ``respond()`` and inspect what the SDK
sent through ``requests``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from support.scripted import Script

JsonBody = dict[str, Any] | list[Any]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, str]  # last value wins; see raw_query for the exact string
    headers: dict[str, str]
    body: bytes
    raw_query: str = ""
    received_at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass
class _Rule:
    status: int
    body: bytes
    headers: dict[str, str]
    delay_s: float
    drop: bool


_DEFAULT_RULE = _Rule(200, b"{}", {"Content-Type": "application/json"}, 0.0, False)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never join handler threads (a delayed one may still sleep)
    allow_reuse_address = True

    owner: FaultServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients timing out / hanging up are expected here; stay quiet.
        return


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until blank line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        owner = self.server.owner
        body = self._read_body()
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        owner._record(
            RecordedRequest(
                method=self.command,
                path=parts.path,
                query=query,
                headers=dict(self.headers.items()),
                body=body,
                raw_query=parts.query,
            )
        )
        rule = owner._next_rule()
        if rule.delay_s > 0 and owner._closing.wait(rule.delay_s):
            # Server is shutting down: hang up instead of answering late.
            self.close_connection = True
            return
        if rule.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(rule.status)
        headers = dict(rule.headers)
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = _guess_content_type(rule.body)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(rule.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(rule.body)
        self.close_connection = True

    do_GET = _handle  # noqa: N815
    do_POST = _handle  # noqa: N815
    do_PUT = _handle  # noqa: N815
    do_PATCH = _handle  # noqa: N815
    do_DELETE = _handle  # noqa: N815
    do_HEAD = _handle  # noqa: N815
    do_OPTIONS = _handle  # noqa: N815


def _guess_content_type(body: bytes) -> str:
    try:
        json.loads(body.decode("utf-8"))
    except ValueError:
        return "text/plain; charset=utf-8"
    return "application/json"


def _encode_body(body: str | bytes | JsonBody) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


class FaultServer:
    """Threaded HTTP server on 127.0.0.1 with scripted answers.

    With no rule it answers ``200 {}`` (application/json).  ``respond(...,
    times=N)`` rules are consumed first, in FIFO order; ``respond(...,
    times=None)`` replaces the default answer.
    """

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._script: Script[_Rule] = Script(_DEFAULT_RULE)
        self._closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.owner = self
        self.host: str = "127.0.0.1"
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"fault-server-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Pusher settings env that points the project's pusher client here."""
        return {"PUSHER_HOST": self.host, "PUSHER_PORT": str(self.port), "PUSHER_SSL": "false"}

    # ------------------------------------------------------------------ scripting
    def respond(
        self,
        status: int,
        body: str | bytes | JsonBody = "",
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
        times: int | None = None,
        *,
        drop: bool = False,
    ) -> None:
        """Script an answer.

        ``times=None`` makes it the default (for ever); ``times=N`` queues it for
        the next N requests (FIFO, before the default).  ``delay_s`` sleeps
        before answering; ``drop=True`` closes the connection without any
        response (``status`` is then ignored).
        """
        self._script.add(_Rule(status, _encode_body(body), dict(headers or {}), delay_s, drop),
                         times)

    def reset_rules(self) -> None:
        """Forget scripted answers; back to ``200 {}``."""
        self._script.reset(_DEFAULT_RULE)

    def _next_rule(self) -> _Rule:
        return self._script.next()

    # ------------------------------------------------------------------ inspection
    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received so far (oldest first)."""
        with self._lock:
            return list(self._requests)

    def count(self, path_prefix: str | None = None) -> int:
        with self._lock:
            if path_prefix is None:
                return len(self._requests)
            return sum(1 for r in self._requests if r.path.startswith(path_prefix))

    def clear(self) -> None:
        """Forget recorded requests (scripted rules are kept)."""
        with self._lock:
            self._requests.clear()

    def wait_for_requests(
        self, count: int, path_prefix: str | None = None, timeout_s: float = 10.0
    ) -> list[RecordedRequest]:
        """Wait until at least ``count`` (matching) requests arrived; return them."""
        deadline = time.monotonic() + timeout_s
        while True:
            matching = [r for r in self.requests if path_prefix is None or r.path.startswith(path_prefix)]
            if len(matching) >= count:
                return matching
            if time.monotonic() >= deadline:
                seen = [f"{r.method} {r.path}" for r in self.requests]
                raise AssertionError(
                    f"expected {count} request(s) to {path_prefix or '*'} within {timeout_s}s, "
                    f"got {len(matching)}; all requests: {seen}"
                )
            time.sleep(0.02)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
