"""Settings: the names users know, one readable message for a bad value, no secret shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.workers import one_line_error, relaycast_cli

from config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-never-print-me"


def test_default_order_is_every_configured_provider_then_log() -> None:
    assert load_settings().broadcaster_order == ("log",)
    pusher = load_settings(PUSHER_APP_ID="1", PUSHER_KEY="k", PUSHER_SECRET=SECRET)
    assert pusher.broadcaster_order == ("pusher", "log")
    both = load_settings(PUSHER_APP_ID="1", PUSHER_KEY="k", PUSHER_SECRET=SECRET, ABLY_API_KEY="a.b:c")
    assert both.broadcaster_order == ("pusher", "ably", "log")
    explicit = load_settings(RELAYCAST_BROADCASTERS=" Log , Pusher ", PUSHER_APP_ID="1",
                             PUSHER_KEY="k", PUSHER_SECRET=SECRET)
    assert explicit.broadcaster_order == ("log", "pusher")


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("RELAYCAST_CHANNEL_PREFIX=private-acme-\nPUSHER_SSL=false\n")
    monkeypatch.setenv("RELAYCAST_FLUSH_INTERVAL_MS", "25")
    settings = load_settings()
    assert settings.channel_prefix == "private-acme-"
    assert settings.pusher_ssl is False
    assert settings.flush_interval_ms == 25


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PUSHER_PORT": "not-a-port"}, "PUSHER_PORT"),
        ({"PUSHER_PORT": "70000"}, "PUSHER_PORT"),
        ({"PUSHER_APP_ID": "abc", "PUSHER_KEY": "k", "PUSHER_SECRET": SECRET}, "PUSHER_APP_ID"),
        ({"PUSHER_APP_ID": "1", "PUSHER_SECRET": SECRET}, "PUSHER_KEY"),
        ({"RELAYCAST_BROADCASTERS": "pusher,carrier-pigeon"}, "RELAYCAST_BROADCASTERS"),
        ({"RELAYCAST_BROADCASTERS": "pusher"}, "RELAYCAST_BROADCASTERS"),
        ({"RELAYCAST_BROADCASTERS": "stub"}, "RELAYCAST_BROADCASTERS"),  # a test double only
        ({"RELAYCAST_CHANNEL_PREFIX": "private-bad prefix!"}, "RELAYCAST_CHANNEL_PREFIX"),
        ({"RELAYCAST_CHANNEL_PREFIX": ""}, "RELAYCAST_CHANNEL_PREFIX"),
        ({"RELAYCAST_CHANNEL_PREFIX": "public-"}, "RELAYCAST_CHANNEL_PREFIX"),
        ({"RELAYCAST_CHANNEL_PREFIX": "private-encrypted-"}, "RELAYCAST_CHANNEL_PREFIX"),
        ({"RELAYCAST_ADMIN_TOKEN": ""}, "RELAYCAST_ADMIN_TOKEN"),
        ({"RELAYCAST_ADMIN_TOKEN": "   "}, "RELAYCAST_ADMIN_TOKEN"),
        ({"RELAYCAST_ADMIN_TOKEN": "change-me"}, "RELAYCAST_ADMIN_TOKEN"),
        ({"RELAYCAST_ADMIN_TOKEN": "short-token"}, "RELAYCAST_ADMIN_TOKEN"),
        ({"REDIS_URL": "nonsense"}, "REDIS_URL"),
        ({"REDIS_URL": "http://localhost:6379"}, "REDIS_URL"),
        ({"CELERY_BROKER_URL": "nonsense"}, "CELERY_BROKER_URL"),
        ({"DATABASE_URL": "garbage"}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://user@host/db"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql+asyncpg://user@host/db"}, "DATABASE_URL"),
        ({"RELAYCAST_ORDER_WAIT_MS": "-1"}, "RELAYCAST_ORDER_WAIT_MS"),
        ({"RELAYCAST_QUOTA_DISABLE": "soon"}, "RELAYCAST_QUOTA_DISABLE"),
        ({"RELAYCAST_FLUSH_INTERVAL_MS": "0"}, "RELAYCAST_FLUSH_INTERVAL_MS"),
        ({"PUSHER_SSL": "maybe"}, "PUSHER_SSL"),
        ({"RELAYCAST_VISIBILITY_TIMEOUT_S": "30"}, "RELAYCAST_RETRY_BACKOFF_MAX_S"),
        ({"RELAYCAST_RETENTION_DAYS": "-1"}, "RELAYCAST_RETENTION_DAYS"),
        ({"RELAYCAST_RETENTION_DAYS": "a month"}, "RELAYCAST_RETENTION_DAYS"),
        ({"RELAYCAST_RETENTION_DAYS": "1.5"}, "RELAYCAST_RETENTION_DAYS"),
        ({"RELAYCAST_PRUNE_INTERVAL_S": "0"}, "RELAYCAST_PRUNE_INTERVAL_S"),
        ({"RELAYCAST_ALERT_WEBHOOK_URL": "hooks.slack.com/services/x"},
         "RELAYCAST_ALERT_WEBHOOK_URL"),
        ({"RELAYCAST_ALERT_WEBHOOK_URL": f"ftp://example.com/{SECRET}"},
         "RELAYCAST_ALERT_WEBHOOK_URL"),
        ({"RELAYCAST_ALERT_WEBHOOK_URL": "https://"}, "RELAYCAST_ALERT_WEBHOOK_URL"),
        ({"RELAYCAST_ALERT_SECRET": "  "}, "RELAYCAST_ALERT_SECRET"),
        ({"RELAYCAST_LOG_FORMAT": "xml"}, "RELAYCAST_LOG_FORMAT"),
    ],
)
def test_a_bad_value_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**env)
    assert variable in str(caught.value)
    assert SECRET not in str(caught.value)


def test_retention_keeps_30_days_by_default_and_0_keeps_everything() -> None:
    assert load_settings().retention_days == 30
    assert load_settings(RELAYCAST_RETENTION_DAYS="0").retention_days == 0
    assert load_settings(RELAYCAST_RETENTION_DAYS="365").retention_days == 365
    assert load_settings().prune_interval_s == 3600


@pytest.mark.parametrize(("given", "stored"), [
    ("postgres://u:p@db:5432/relaycast", "postgresql+psycopg://u:p@db:5432/relaycast"),
    ("postgresql://u@db/relaycast", "postgresql+psycopg://u@db/relaycast"),
    ("postgresql+psycopg://u@db/relaycast", "postgresql+psycopg://u@db/relaycast"),
    ("sqlite:////var/lib/relaycast.db", "sqlite:////var/lib/relaycast.db"),
])
def test_database_urls_people_have_mean_postgresql_through_psycopg(given: str, stored: str) -> None:
    assert load_settings(DATABASE_URL=given).database_url == stored


def test_the_messages_say_what_to_do() -> None:
    def message(**env: str) -> str:
        with pytest.raises(ConfigError) as caught:
            load_settings(**env)
        return str(caught.value)

    assert "must start with 'private-'" in message(RELAYCAST_CHANNEL_PREFIX="public-")
    assert "secrets.token_urlsafe" in message(RELAYCAST_ADMIN_TOKEN="")
    assert "at least 16 characters" in message(RELAYCAST_ADMIN_TOKEN="tooshort")
    assert "placeholder" in message(RELAYCAST_ADMIN_TOKEN="change-me")
    assert "SQLite or PostgreSQL" in message(DATABASE_URL="mysql://u@h/db")
    # Schemes SQLAlchemy has no dialect for at all: the same one line, not its exception.
    assert message(DATABASE_URL="http://h/db").startswith("invalid configuration: DATABASE_URL: http ")
    assert "SQLite or PostgreSQL" in message(DATABASE_URL="redis://h:6379/0")
    assert "redis://" in message(REDIS_URL="nonsense")
    assert load_settings(RELAYCAST_ADMIN_TOKEN="x" * 16).admin_token is not None


def test_bad_configuration_stops_every_command_with_one_line(tmp_path: Path) -> None:
    result = relaycast_cli("status", env={"PUSHER_PORT": "not-a-port", "PUSHER_SECRET": SECRET},
                     cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "PUSHER_PORT" in one_line_error(result)
    assert SECRET not in result.stderr


def test_secrets_are_masked_in_the_settings_repr() -> None:
    settings = load_settings(PUSHER_APP_ID="1", PUSHER_KEY="k", PUSHER_SECRET=SECRET,
                        ABLY_API_KEY="app.key:" + SECRET, RELAYCAST_ADMIN_TOKEN=SECRET)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())


@pytest.mark.parametrize(("env", "variable"), [
    ({"REDIS_URL": "nonsense"}, "REDIS_URL"),
    ({"DATABASE_URL": "garbage"}, "DATABASE_URL"),
    ({"DATABASE_URL": "mysql://user@host/db"}, "DATABASE_URL"),
    ({"RELAYCAST_ADMIN_TOKEN": ""}, "RELAYCAST_ADMIN_TOKEN"),
])
def test_celery_itself_stops_with_one_line_naming_the_variable(
        env: dict[str, str], variable: str, tmp_path: Path) -> None:
    from support.workers import run_python

    result = run_python("-m", "celery", "-A", "tasks", "report", env=env, cwd=REPO,
                        timeout_s=60)
    assert result.returncode == 2
    assert variable in one_line_error(result)


#: The variables the contract names otherwise than ``RELAYCAST_<FIELD>`` (ARCHITECTURE.md).
CONTRACT_NAMES = {
    "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET", "PUSHER_CLUSTER", "PUSHER_HOST", "PUSHER_PORT",
    "PUSHER_SSL", "ABLY_API_KEY", "ABLY_REST_HOST", "ABLY_REST_PORT", "ABLY_TLS", "REDIS_URL",
    "CELERY_BROKER_URL", "DATABASE_URL", "SOCKETIO_MESSAGE_QUEUE", "SOCKETIO_CHANNEL",
}


def test_every_variable_is_relaycast_and_the_field_name_unless_the_contract_names_it() -> None:
    from config.settings import Settings, _env_name

    named = {field: _env_name(field) for field in Settings.model_fields}
    contract = {field: name for field, name in named.items() if not name.startswith("RELAYCAST_")}
    assert set(contract.values()) == CONTRACT_NAMES
    assert all(name == field.upper() for field, name in contract.items()), contract
    ruled = {field: name for field, name in named.items() if field not in contract}
    assert all(name == f"RELAYCAST_{field.upper()}" for field, name in ruled.items()), ruled
    assert {"flush_interval_ms", "pusher_max_event_bytes", "socketio_port", "mirror"} <= set(ruled)


@pytest.mark.parametrize(("variable", "value"), [
    ("RELAYCAST_SOCKETIO_PORT", "0"),
    ("RELAYCAST_PUSHER_MAX_EVENT_BYTES", "20000"),
    ("RELAYCAST_BROWSER_POLL_INTERVAL_MS", "soon"),
    ("RELAYCAST_CAPTURE", "everything"),
    ("RELAYCAST_LOG_LEVEL", "loud"),
    ("RELAYCAST_MIRROR", "carrier-pigeon"),
    ("RELAYCAST_WORKFLOWS", "not a module"),
    ("RELAYCAST_BROWSER_SOCKETIO_URL", "live.example.com"),
])
def test_a_bad_value_of_a_derived_name_names_the_variable(
        variable: str, value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"^invalid configuration: {variable}: "):
        load_settings(**{variable: value})
    # The same value under the field's bare name (LOG_LEVEL, WORKFLOWS: names other programs
    # use) is not relaycast's: ignored, never a reason to stop.
    before = load_settings()
    monkeypatch.setenv(variable.removeprefix("RELAYCAST_"), value)
    assert load_settings() == before
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"^invalid configuration: {variable}: "):
        load_settings()


def test_a_derived_name_is_read_from_the_environment_and_dotenv(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("RELAYCAST_SOCKETIO_PORT=9001\nSOCKETIO_CHANNEL=acme\n")
    monkeypatch.setenv("RELAYCAST_PUSHER_MAX_EVENT_BYTES", "4096")
    settings = load_settings()
    assert (settings.socketio_port, settings.socketio_channel) == (9001, "acme")
    assert settings.pusher_max_event_bytes == 4096
