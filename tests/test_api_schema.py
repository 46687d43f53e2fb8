"""The OpenAPI document of ``relaycast api`` (``/openapi.json``): valid OpenAPI, every status
each route can answer declared with its body's schema, and the live API answering as it says.

The last is schemathesis over a real ``relaycast api`` (uvicorn subprocess, a private Redis,
SQLite, the admin token set): generated requests for every operation, each answer checked for
a server error, a status the document does not declare, a content type it does not declare,
and a body that does not match the declared schema.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.api import ApiServer
from support.runs import run_env
from support.seeding import seed_lines

from config.settings import load_settings
from relaycast.api.app import create_app
from workflows.models import RunStatus
from workflows.store import LogStore

TOKEN = "token-for-the-schema-tests"
KEY, SECRET = "app-key", "app-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Operations anyone may call: the browser's transport config.
PUBLIC = {("get", "/ui/config")}
#: Operations a webhook signature (not the token) lets in: they answer 401 too.
SIGNED = {("post", "/pusher/webhook")}
#: Generated requests per operation and mode (positive, negative): few, so the run stays short;
#: derandomized, so every run sends the same requests.
EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def _document(**env: str) -> dict[str, Any]:
    document: dict[str, Any] = create_app(load_settings(**env)).openapi()
    return document


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield method, path, operation


@pytest.fixture
def documents(sqlite_url: str) -> dict[str, dict[str, Any]]:
    """The document with the admin token set, and without (everything open)."""
    env = {"DATABASE_URL": sqlite_url, "PUSHER_APP_ID": "1", "PUSHER_KEY": KEY,
           "PUSHER_SECRET": SECRET}
    return {"token": _document(**env, RELAYCAST_ADMIN_TOKEN=TOKEN), "open": _document(**env)}


def test_the_document_is_valid_openapi(documents: dict[str, dict[str, Any]]) -> None:
    for document in documents.values():
        validate(document)  # raises, saying where, on an invalid document


def test_every_operation_declares_the_body_caps_400_and_413(
        documents: dict[str, dict[str, Any]]) -> None:
    """BodyLimit answers before any route runs, whatever the method."""
    for method, path, operation in _operations(documents["token"]):
        assert {"400", "413"} <= set(operation["responses"]), (method, path)


def test_with_a_token_every_guarded_operation_declares_401_and_the_two_ways_in(
        documents: dict[str, dict[str, Any]]) -> None:
    document = documents["token"]
    schemes = document["components"]["securitySchemes"]
    assert schemes["adminToken"] == {"type": "http", "scheme": "bearer",
                                     "description": schemes["adminToken"]["description"]}
    assert (schemes["viewerSession"]["in"], schemes["viewerSession"]["name"]) == \
        ("cookie", "relaycast_session")
    guarded = 0
    for method, path, operation in _operations(document):
        if (method, path) in PUBLIC | SIGNED:
            assert "security" not in operation, (method, path)
            continue
        guarded += 1
        assert "401" in operation["responses"], (method, path)
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"], (method, path)
        assert operation["security"] == [{"adminToken": []}, {"viewerSession": []}], (method, path)
    assert guarded >= 7


def test_without_a_token_no_operation_declares_401_but_the_signed_webhook(
        documents: dict[str, dict[str, Any]]) -> None:
    document = documents["open"]
    assert "securitySchemes" not in document.get("components", {})
    for method, path, operation in _operations(document):
        assert ("401" in operation["responses"]) == ((method, path) in SIGNED), (method, path)
        assert "security" not in operation, (method, path)


def test_every_answer_declares_its_body(documents: dict[str, dict[str, Any]]) -> None:
    """No ``{}`` schema and no free-form object: each JSON answer names its model, errors are
    ``Problem`` (or FastAPI's validation error for 422)."""
    for method, path, operation in _operations(documents["token"]):
        for status, answer in operation["responses"].items():
            assert answer.get("content"), (method, path, status)
            for media_type, content in answer["content"].items():
                schema = content["schema"]
                if media_type != "application/json":
                    assert schema == {"type": "string"}, (method, path, status)
                    continue
                expected = {"422": "HTTPValidationError"}.get(status, "Problem")
                if status.startswith("2"):
                    assert schema.get("$ref", "").startswith("#/components/schemas/"), \
                        (method, path, status, schema)
                else:
                    assert schema == {"$ref": f"#/components/schemas/{expected}"}, \
                        (method, path, status)


def test_the_bodies_read_from_the_raw_request_are_declared(
        documents: dict[str, dict[str, Any]]) -> None:
    paths = documents["token"]["paths"]
    auth = paths["/pusher/auth"]["post"]["requestBody"]
    assert set(auth["content"]) == {"application/x-www-form-urlencoded", "application/json"}
    for content in auth["content"].values():
        assert content["schema"]["required"] == ["socket_id", "channel_name"]
    webhook = paths["/pusher/webhook"]["post"]
    assert webhook["requestBody"]["content"]["application/json"]["schema"]["required"] == \
        ["time_ms", "events"]
    assert {(p["name"], p["in"], p["required"]) for p in webhook["parameters"]} == {
        ("X-Pusher-Key", "header", True), ("X-Pusher-Signature", "header", True)}


def test_the_run_id_in_a_path_says_what_it_may_be(documents: dict[str, dict[str, Any]]) -> None:
    for method, path, operation in _operations(documents["token"]):
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "run_id":
                assert parameter["schema"]["pattern"] == "^[A-Za-z0-9_\\-=@,.;]+$", (method, path)


def test_the_served_document_is_the_one_checked_here(
        live_api: ApiServer, documents: dict[str, dict[str, Any]]) -> None:
    served = requests.get(live_api.url + "/openapi.json", headers=AUTH, timeout=10)
    assert served.status_code == 200
    assert served.json()["paths"].keys() == documents["token"]["paths"].keys()
    assert requests.get(live_api.url + "/openapi.json", timeout=10).status_code == 401


# The live API against its document (schemathesis) ---------------------------------------------

@pytest.fixture
def live_api(broker: str, database_url: str) -> Iterator[ApiServer]:
    """``relaycast api`` with the token, Pusher's settings (so /pusher/auth signs) and webhook
    occupancy (so a signed webhook is recorded in Redis), over a database with a run in it."""
    store = LogStore.from_url(database_url)
    store.start_run("run-7", "etl", {"rows": 3})
    seed_lines(store, [{"run_id": "run-7", "seq": i, "ts": 1_700_000_000_000 + i, "level": "info",
                        "message": f"line {i} \u00e9", "data": {"i": i}} for i in range(1, 6)])
    store.finish_run("run-7", RunStatus.SUCCEEDED)
    store.close()
    env = run_env(broker, database_url, PUSHER_APP_ID="1", PUSHER_KEY=KEY, PUSHER_SECRET=SECRET,
                  RELAYCAST_OCCUPANCY="webhooks", RELAYCAST_ADMIN_TOKEN=TOKEN,
                  RELAYCAST_WORKFLOWS="workflows.examples")
    server = ApiServer(env)
    server.start()
    yield server
    server.close()


def _sign(case: Any, kwargs: dict[str, Any]) -> None:
    """Make a generated webhook pass the signature check (with a current ``time_ms``), so
    that its body is what gets fuzzed; one without the signature headers stays unsigned."""
    headers = kwargs.setdefault("headers", {})
    if not {"X-Pusher-Key", "X-Pusher-Signature"} <= set(case.headers or {}):
        return
    if "json" in kwargs:
        body = kwargs.pop("json")
        if isinstance(body, dict) and isinstance(body.get("time_ms"), int):
            body["time_ms"] = int(time.time() * 1000)
        kwargs["data"] = json.dumps(body).encode("utf-8")
    raw = kwargs.get("data") or b""
    raw = raw.encode("utf-8") if isinstance(raw, str) else raw
    headers["X-Pusher-Key"] = KEY
    headers["X-Pusher-Signature"] = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()


def _fuzz(operation: APIOperation[Any, Any, Any, Any], mode: GenerationMode, url: str) -> str | None:
    """Run ``EXAMPLES`` generated requests of ``mode`` against ``operation``: None when every
    answer passes :data:`CHECKS`, else what failed (shrunk to a minimal request) and a curl
    command that repeats it."""
    failing: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode))
    def run(case: Case[Any]) -> None:
        kwargs = case.as_transport_kwargs(base_url=url, headers=AUTH)
        if case.path == "/pusher/webhook":
            _sign(case, kwargs)
        response = requests.request(**kwargs, timeout=30)
        try:
            case.validate_response(response, checks=CHECKS, headers=kwargs.get("headers"),
                                   transport_kwargs=kwargs)
        except (AssertionError, FailureGroup):
            failing[:] = [case.as_curl_command(headers=kwargs.get("headers"), base_url=url)]
            raise

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, operation.label
        return None  # nothing to make invalid: no parameter and no body
    except (AssertionError, FailureGroup) as exc:
        return f"{operation.label} ({mode.value}): {exc}\n  {failing[0] if failing else ''}"
    return None


@pytest.mark.timeout(300)
def test_the_live_api_answers_as_its_document_says(live_api: ApiServer) -> None:
    schema = schemathesis.openapi.from_url(live_api.url + "/openapi.json", headers=AUTH,
                                           timeout=10)
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operations.append(result.ok())
    assert len(operations) >= 10
    failures = [failure for operation in operations
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                if (failure := _fuzz(operation, mode, live_api.url)) is not None]
    assert not failures, "\n\n".join(failures)
