"""How a setting is named in the environment: one rule, and the names the contract fixes.

Each of relaycast's own knobs is read from ``RELAYCAST_`` and its field's name in capitals
(``flush_interval_ms`` is ``RELAYCAST_FLUSH_INTERVAL_MS``): :data:`ENV_NAMES` derives it, so
no such name is written by hand. A field whose variable the contract fixes otherwise (names
users of other tools already have: ``PUSHER_*``, ``ABLY_*``, ``SOCKETIO_*``, ``REDIS_URL``,
``CELERY_BROKER_URL``, ``DATABASE_URL``) says so with :func:`contract_name`, which the rule
never overrides.

Either way the name is the field's ``validation_alias``, not an ``env_prefix``: the alias is
also what ``load_settings(RELAYCAST_X=...)`` accepts, what a message names (:func:`env_name`)
and what the check of ``.env.example`` and docker-compose reads back. A field's bare Python
name is not read (``populate_by_name=False``): ``LOG_LEVEL`` belongs to other programs.
"""

from __future__ import annotations

from pydantic import AliasChoices, AliasGenerator, BaseModel

#: The prefix of every variable relaycast itself defines.
ENV_PREFIX = "RELAYCAST_"


def relaycast_name(field: str) -> AliasChoices:
    """The rule: ``RELAYCAST_`` and the field's name in capitals."""
    return AliasChoices(ENV_PREFIX + field.upper())


def contract_name(name: str) -> AliasChoices:
    """A variable the contract names, for a field the rule would name otherwise."""
    return AliasChoices(name)


#: The settings' alias generator: the rule, for every field not given a contract name.
ENV_NAMES = AliasGenerator(validation_alias=relaycast_name)


def env_name(model: type[BaseModel], field: str) -> str:
    """The variable ``field`` of ``model`` is read from; a name that is not a field (an error
    located by the alias it came in as) is returned in capitals."""
    info = model.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        return first if isinstance(first, str) else field.upper()
    return field.upper()
