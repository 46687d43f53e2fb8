"""A small local server speaking the part of Ably's REST API the ``ably`` SDK publishes with.

Point the real SDK at it with ``env()`` (ABLY_REST_HOST/ABLY_REST_PORT, ABLY_TLS=false).
It answers:

* ``POST /keys/{keyName}/requestToken``: a token (the SDK uses token auth without TLS);
* ``POST /channels/{name}/messages`` (JSON, one message object or a list): ``201`` with
  ``{"channel", "messageId", "serials"}``, unless a scripted error comes first; publishes over
  Ably's 64 KiB per-publish limit get ``413`` / ``40009`` as from Ably;
* ``GET /time``: the server time, in a one-element list.

Every request is recorded, and every message of an accepted publish (channel, name, data,
encoding, id). Nothing is de-duplicated: tests check the ids themselves. With ``tls=True``
it serves HTTPS with a self-signed certificate made by ``openssl`` (``ca_file`` trusts it).
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

from support.scripted import Script

#: Ably's limit for one publish: data, name, client id and extras of every message in it.
MAX_PUBLISH_BYTES = 65_536


@dataclass(frozen=True)
class AblyMessage:
    channel: str
    name: str | None
    data: Any
    encoding: str | None
    id: str | None

    def decoded(self) -> Any:
        """``data`` as a subscriber's SDK hands it over (``encoding`` undone, last step first)."""
        data = self.data
        for step in reversed((self.encoding or "").split("/")):
            if step == "json":
                data = json.loads(data)
            elif step == "base64":
                data = base64.b64decode(data)
            elif step == "utf-8" and isinstance(data, bytes):
                data = data.decode("utf-8")
            elif step not in ("", "utf-8"):
                raise ValueError(f"unsupported encoding step {step!r}")
        return data

    @property
    def size_bytes(self) -> int:
        """What Ably counts against the message size limit (name and data here)."""
        data = self.data if isinstance(self.data, str) else json.dumps(self.data)
        return len((self.name or "").encode("utf-8")) + len(data.encode("utf-8"))


@dataclass(frozen=True)
class AblyRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the server answered (0: no answer, the connection was dropped)
    messages: tuple[AblyMessage, ...] = ()  # what the body carried (publishes only)
    received_at: float = field(default_factory=time.monotonic)

    @property
    def channel(self) -> str | None:
        return self.messages[0].channel if self.messages else None

    @property
    def ids(self) -> list[str | None]:
        return [m.id for m in self.messages]

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass
class _Rule:
    status: int
    code: int
    message: str
    delay_s: float
    headers: dict[str, str]
    raw_body: bytes | None = None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    owner: AblyServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # clients timing out or hanging up are expected


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        extra = dict(headers or {})
        if not any(k.lower() == "content-type" for k in extra):
            extra["Content-Type"] = "application/json" if raw is None else "text/plain"
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def do_GET(self) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        owner._record(AblyRequest("GET", path, dict(self.headers.items()), b"", 200))
        if path == "/time":
            self._send(200, [int(time.time() * 1000)])
        else:
            self._send(404, _error(404, 40400, f"no route for GET {path}"))

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self._body()
        path = unquote(urlsplit(self.path).path)
        headers = dict(self.headers.items())
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "keys" and parts[2] == "requestToken":
            status, payload = owner._issue_token(parts[1])
            owner._record(AblyRequest("POST", path, headers, body, status))
            self._send(status, payload)
            return
        if not (len(parts) == 3 and parts[0] == "channels" and parts[2] == "messages"):
            owner._record(AblyRequest("POST", path, headers, body, 404))
            self._send(404, _error(404, 40400, f"no route for POST {path}"))
            return
        channel = parts[1]
        try:
            decoded = json.loads(body.decode("utf-8"))
            items = decoded if isinstance(decoded, list) else [decoded]
            messages = tuple(AblyMessage(channel, m.get("name"), m.get("data"), m.get("encoding"),
                                         m.get("id")) for m in items)
        except (ValueError, AttributeError):
            owner._record(AblyRequest("POST", path, headers, body, 400))
            self._send(400, _error(400, 40000, "body is not a JSON message or list of messages"))
            return
        rule = owner._next_rule()
        if rule is not None and rule.delay_s > 0 and owner._closing.wait(rule.delay_s):
            owner._record(AblyRequest("POST", path, headers, body, 0, messages))
            self.close_connection = True
            return
        if rule is not None and rule.status:
            owner._record(AblyRequest("POST", path, headers, body, rule.status, messages))
            self._send(rule.status, _error(rule.status, rule.code, rule.message), rule.headers,
                       raw=rule.raw_body)
            return
        status, payload = owner._accept(path, headers, body, channel, messages)
        self._send(status, payload)


def _error(status: int, code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "statusCode": status, "message": message,
                      "href": f"https://help.ably.io/error/{code}"}}


class AblyServer:
    """Threaded HTTP(S) server on 127.0.0.1 (a free port) playing Ably's REST publish API.

    ``key`` (``appid.keyid:secret``), when given, is checked: basic auth must carry it and token
    requests must name its key. Scripted errors (``respond_error``, ``respond_delay``) apply to
    publishes only, first in first out; ``times=None`` makes one the default for ever.
    """

    def __init__(self, *, key: str | None = None, tls: bool = False,
                 max_publish_bytes: int = MAX_PUBLISH_BYTES) -> None:
        self.key = key
        self.max_publish_bytes = max_publish_bytes
        self._lock = threading.Lock()
        self._requests: list[AblyRequest] = []
        self._messages: list[AblyMessage] = []
        self._script: Script[_Rule | None] = Script(None)
        self._tokens: set[str] = set()
        self._serial = 0
        self._closing = threading.Event()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca_file: str | None = None
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        if tls:
            self._wrap_tls()
        self.tls = tls
        self.host = "127.0.0.1"
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"ably-server-{self.port}", daemon=True)
        self._thread.start()

    def _wrap_tls(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            self._httpd.server_close()
            raise RuntimeError("openssl is needed for a TLS AblyServer")
        self._tmp = tempfile.TemporaryDirectory(prefix="ably-server-")
        cert, key = Path(self._tmp.name, "cert.pem"), Path(self._tmp.name, "key.pem")
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True, timeout=60)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.ca_file = str(cert)

    def env(self) -> dict[str, str]:
        """Settings env pointing relaycast's Ably client here."""
        return {"ABLY_REST_HOST": self.host, "ABLY_REST_PORT": str(self.port),
                "ABLY_TLS": "true" if self.tls else "false"}

    # ------------------------------------------------------------------ scripting
    def respond_error(self, http_status: int, code: int, message: str = "scripted error",
                      times: int | None = None, *, delay_s: float = 0.0,
                      headers: dict[str, str] | None = None, raw_body: bytes | None = None) -> None:
        """Answer the next ``times`` publishes (``None``: all) with an Ably error body
        ``{"error": {"code", "statusCode", "message"}}`` (or ``raw_body`` as text/plain)."""
        self._script.add(_Rule(http_status, code, message, delay_s, dict(headers or {}), raw_body),
                         times)

    def respond_delay(self, delay_s: float, times: int | None = 1) -> None:
        """Wait ``delay_s`` before answering the next ``times`` publishes normally."""
        self._script.add(_Rule(0, 0, "", delay_s, {}), times)

    def reset_rules(self) -> None:
        self._script.reset(None)

    def _next_rule(self) -> _Rule | None:
        return self._script.next()

    # ------------------------------------------------------------------ answers
    def _issue_token(self, key_name: str) -> tuple[int, dict[str, Any]]:
        if self.key is not None and key_name != self.key.split(":")[0]:
            return 404, _error(404, 40400, "no such key")
        now = int(time.time() * 1000)
        with self._lock:
            self._serial += 1
            token = f"token-{self._serial}"
            self._tokens.add(token)
        return 200, {"token": token, "keyName": key_name, "issued": now, "expires": now + 3_600_000,
                     "capability": '{"*":["*"]}'}

    def _authorized(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or "").partition(" ")
        try:
            credentials = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if scheme == "Bearer":
            with self._lock:
                return credentials in self._tokens
        if scheme == "Basic":
            return self.key is None or credentials == self.key
        return False

    def _accept(self, path: str, headers: dict[str, str], body: bytes, channel: str,
                messages: tuple[AblyMessage, ...]) -> tuple[int, dict[str, Any]]:
        def answer(status: int, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            self._record(AblyRequest("POST", path, headers, body, status, messages))
            return status, payload

        if not self._authorized(next((v for k, v in headers.items() if k.lower() == "authorization"),
                                     None)):
            return answer(401, _error(401, 40140, "token or key not recognised"))
        size = sum(m.size_bytes for m in messages)
        if size > self.max_publish_bytes:
            return answer(413, _error(413, 40009, f"Maximum size of messages that can be published at "
                                                  f"once exceeded (was {size} bytes; limit is "
                                                  f"{self.max_publish_bytes} bytes)"))
        with self._lock:
            self._messages.extend(messages)
            self._serial += 1
            serials = [f"{self._serial:08d}@{i}" for i in range(len(messages))]
        return answer(201, {"channel": channel, "messageId": messages[0].id if messages else None,
                            "serials": serials})

    # ------------------------------------------------------------------ inspection
    def _record(self, request: AblyRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[AblyRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def publishes(self) -> list[AblyRequest]:
        """Every publish request, answered or not."""
        return [r for r in self.requests if r.path.startswith("/channels/")]

    @property
    def token_requests(self) -> list[AblyRequest]:
        return [r for r in self.requests if r.path.startswith("/keys/")]

    @property
    def messages(self) -> list[AblyMessage]:
        """Messages of accepted publishes, in arrival order."""
        with self._lock:
            return list(self._messages)

    def wait_for_publishes(self, count: int, timeout_s: float = 10.0) -> list[AblyRequest]:
        """Wait until ``count`` publishes are recorded (a delayed one is, once it is answered)."""
        deadline = time.monotonic() + timeout_s
        while len(found := self.publishes) < count:
            if time.monotonic() >= deadline:
                raise AssertionError(f"expected {count} publish(es) within {timeout_s}s, got {len(found)}")
            time.sleep(0.02)
        return found

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._messages.clear()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
