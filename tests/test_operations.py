"""Operations: Flower sees the workers and readable tasks; docker-compose.yml is coherent."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from support.servers import _ChildProcess, free_port
from support.workers import CeleryWorker, project_env, with_examples

from config import load_settings
from config.settings import Settings

REPO = Path(__file__).resolve().parents[1]


class Flower(_ChildProcess):
    _name = "flower"

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__()
        self.port = free_port()
        self.env = project_env({**env, "FLOWER_UNAUTHENTICATED_API": "true"})

    def start(self, timeout_s: float = 30.0) -> None:
        workdir = self._new_workdir()
        self._spawn([sys.executable, "-m", "celery", "-A", "tasks", "flower",
                     f"--port={self.port}", "--address=127.0.0.1"], workdir, env=self.env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{self.port}/healthcheck", timeout=1)
                return
            except requests.ConnectionError:
                if not self.is_running():
                    raise self._fail(RuntimeError, "flower exited") from None
                time.sleep(0.2)
        raise self._fail(TimeoutError, "flower did not start")


def test_flower_lists_a_worker_consuming_broadcast_and_readable_tasks(
    broker: str, sqlite_url: str,
) -> None:
    secret = "pusher-secret-not-for-flower"
    env = {"REDIS_URL": broker, "DATABASE_URL": sqlite_url, "RELAYCAST_BROADCASTERS": "log",
           "PUSHER_APP_ID": "1", "PUSHER_KEY": "k", "PUSHER_SECRET": secret}
    worker = CeleryWorker(env, concurrency=1, name="flowerseen")
    flower = Flower(env)
    try:
        worker.start()
        flower.start()
        base = f"http://127.0.0.1:{flower.port}"
        workers: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not workers:
            workers = requests.get(f"{base}/api/workers", params={"refresh": "true"},
                                   timeout=15).json()
            time.sleep(0.5)
        (name,) = [n for n in workers if n.startswith("flowerseen@")]
        queues = {q["name"] for q in workers[name]["active_queues"]}
        assert {"broadcast", "workflows"} <= queues

        run = subprocess.run([sys.executable, "-m", "relaycast", "run", "agent", "--param",
                              "steps=2", "--param", "delay_ms=1"],
                             env=project_env(with_examples(env)),
                             capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 0, run.stderr
        tasks: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tasks = requests.get(f"{base}/api/tasks", timeout=10).json()
            names = {t["name"] for t in tasks.values()}
            if {"workflows.agent", "relaycast.broadcast"} <= names:
                break
            time.sleep(0.5)
        names = {t["name"] for t in tasks.values()}
        assert {"workflows.agent", "relaycast.broadcast"} <= names
        broadcast = next(t for t in tasks.values() if t["name"] == "relaycast.broadcast")
        assert re.match(r"\(runs=.*, lines=\d+, admin=\d+\)", broadcast["args"])
        assert all(secret not in str(t) for t in tasks.values())
    finally:
        flower.close()
        worker.close()


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


RELAYCAST_SERVICES = ("migrate", "worker", "beat", "flower", "api", "socketio")


def test_compose_has_every_service_with_healthchecks_and_restart_policies() -> None:
    services = _compose()["services"]
    assert {"redis", "postgres", "soketi", "worker", "beat", "flower", "api"} <= set(services)
    for name in ("redis", "postgres", "worker", "flower", "api"):
        assert "healthcheck" in services[name], name
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "always", "no"), name
    assert "--appendonly" in services["redis"]["command"], "the broker must persist"
    assert "--basic-auth" in " ".join(services["flower"]["command"])


def test_compose_commands_name_real_entry_points() -> None:
    services = _compose()["services"]
    for name in RELAYCAST_SERVICES:
        argv = services[name]["command"]
        if argv[0] == "celery":
            assert argv[1:3] == ["-A", "relaycast"], name
            help_run = subprocess.run([sys.executable, "-m", "celery", *argv[1:4], "--help"],
                                      capture_output=True, text=True, timeout=60, check=False,
                                      env=project_env({}), cwd=REPO)
            assert help_run.returncode == 0, (name, help_run.stderr[-500:])
        else:
            assert argv[0] == "relaycast", name
            help_run = subprocess.run([sys.executable, "-m", "relaycast", argv[1], "--help"],
                                      capture_output=True, text=True, timeout=60, check=False,
                                      env=project_env({}))
            assert help_run.returncode == 0, (name, help_run.stderr)
            for flag in (a for a in argv[2:] if a.startswith("--")):
                assert flag in help_run.stdout, (name, flag)


def _known_variables() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        names.update(c for c in getattr(alias, "choices", []) if isinstance(c, str))
    return names


def test_every_variable_compose_and_env_example_set_is_one_the_settings_know() -> None:
    known = _known_variables()
    assert "PUSHER_APP_ID" in known
    assert "RELAYCAST_HEALTH_INTERVAL_S" in known
    compose = _compose()
    for name in RELAYCAST_SERVICES:
        service = {**compose["x-relaycast"], **compose["services"][name]}
        for variable in service.get("environment", {}):
            assert variable in known, (name, variable)
    example = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    assert known <= listed | {"RELAYCAST_TEST_POSTGRES"}, known - listed
    assert listed - known <= {"FLOWER_BASIC_AUTH"}, listed - known
    for argv in (compose["services"][n]["command"] for n in RELAYCAST_SERVICES):
        assert isinstance(argv, list), f"{argv!r}: a command is an argv list, not a shell string"


def test_env_example_copied_to_env_is_a_valid_configuration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text((REPO / ".env.example").read_text())
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.pusher_app_id == "1"
    assert settings.admin_token is None, "no example token: each deployment makes its own"


def test_compose_sends_soketis_occupancy_webhooks_to_the_api() -> None:
    services = _compose()["services"]
    [hook] = json.loads(services["soketi"]["environment"]["SOKETI_DEFAULT_APP_WEBHOOKS"])
    assert hook["url"] == "http://api:8000/pusher/webhook"
    assert set(hook["event_types"]) == {"channel_occupied", "channel_vacated"}
    assert "8000:8000" in services["api"]["ports"]
