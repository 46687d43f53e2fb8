"""Infrastructure settings (``REDIS_URL``, ``CELERY_BROKER_URL``, ``DATABASE_URL``) and the
checks that make a URL one relaycast can use."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from config.naming import contract_name

REDIS_SCHEMES = ("redis", "rediss", "unix")
BROKER_SCHEMES = (*REDIS_SCHEMES, "amqp", "amqps", "pyamqp", "memory", "sentinel", "sqs")
SOCKETIO_QUEUE_SCHEMES = (*REDIS_SCHEMES, "amqp", "amqps")


def url_with_scheme(value: str | None, schemes: tuple[str, ...], example: str) -> str | None:
    """``value`` stripped, or ValueError when its scheme is not one of ``schemes``."""
    if value is None:
        return None
    scheme, sep, rest = value.strip().partition("://")
    if not sep or scheme.lower() not in schemes or (not rest and scheme != "memory"):
        raise ValueError(f"not a URL this can use (expected {', '.join(s + '://' for s in schemes)}"
                         f", e.g. {example})")
    return value.strip()


#: The SQL databases relaycast stores lines in, and the driver each needs.
_DRIVERS = {"sqlite": ("pysqlite", "sqlite3", None),
            "postgresql": ("psycopg", "psycopg", "pip install 'relaycast[postgres]'")}


def normalise_database_url(value: str) -> str:
    """A SQLAlchemy URL relaycast supports, or ValueError saying what to do.

    ``postgres://`` and ``postgresql://`` (what hosting providers hand out) mean PostgreSQL
    through psycopg 3, the driver the ``postgres`` extra installs.
    """
    import importlib.util

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = value.strip()
    for alias in ("postgres://", "postgresql://"):
        if text.startswith(alias):
            text = "postgresql+psycopg://" + text[len(alias):]
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError("not a database URL (e.g. sqlite:////var/lib/relaycast/relaycast.db or "
                         "postgresql+psycopg://user:password@host:5432/relaycast)") from None
    # The backend from the URL's own text: asking SQLAlchemy for the driver of a scheme it
    # has no dialect for (http://, redis://) raises instead of answering.
    backend = url.drivername.partition("+")[0]
    if backend not in _DRIVERS:
        raise ValueError(f"{backend} is not supported: relaycast stores lines in SQLite or "
                         "PostgreSQL (postgresql+psycopg://user:password@host:5432/db)")
    driver = url.get_driver_name()
    expected, module, install = _DRIVERS[backend]
    if driver != expected:
        raise ValueError(f"use {backend}+{expected}:// (the {driver} driver is not supported)")
    if install and importlib.util.find_spec(module) is None:
        raise ValueError(f"{backend} needs the {module} driver: {install}")
    return url.render_as_string(hide_password=False)


class InfrastructureSettings(BaseModel):
    """Where Redis, the Celery broker and the database are (names fixed by the contract)."""

    redis_url: str | None = Field(None, validation_alias=contract_name("REDIS_URL"))
    celery_broker_url: str | None = Field(None, validation_alias=contract_name("CELERY_BROKER_URL"))
    database_url: str | None = Field(None, validation_alias=contract_name("DATABASE_URL"))

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return url_with_scheme(value, REDIS_SCHEMES, "redis://host:6379/0")

    @field_validator("celery_broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        return url_with_scheme(value, BROKER_SCHEMES, "redis://host:6379/0 or amqp://user@host//")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        return None if value is None else normalise_database_url(value)
