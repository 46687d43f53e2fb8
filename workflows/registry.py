"""The workflows a process knows: the modules named in ``RELAYCAST_WORKFLOWS``, imported once.

    RELAYCAST_WORKFLOWS=acme.jobs,acme.reports

The worker and beat (``tasks.celery_app``), the CLI and the API each import these modules
before they look a workflow up, so a workflow registered with ``@workflow`` in the user's
own module is as known as the examples. The examples (``workflows.examples``) register only
where asked: ``relaycast demo``, or ``RELAYCAST_WORKFLOWS`` naming them.

Modules are imported the way ``celery -A`` imports its app: the current directory first on
``sys.path`` while importing, so ``acme/`` beside where the worker starts is found without
installing it. A module that fails to import stops start-up with one line naming it
(:class:`config.ConfigError`).
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Iterable
from typing import Any

from celery.utils.imports import cwd_in_path

from config import ConfigError
from workflows.base import FUNCTIONS, REGISTRY

#: The module of the example workflows (``relaycast demo`` imports it).
EXAMPLES = "workflows.examples"


def import_workflows(modules: Iterable[str]) -> None:
    """Import each module (registering its workflows), or raise :class:`ConfigError` naming
    the first that fails and why, in one line."""
    with cwd_in_path():
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - any failure of the user's module
                reason = str(exc).strip().splitlines()
                raise ConfigError(
                    f"RELAYCAST_WORKFLOWS: cannot import {name!r}: {type(exc).__name__}"
                    + (f": {reason[0]}" if reason else "")) from None


def known() -> list[str]:
    """Names of the workflows registered in this process, sorted."""
    return sorted(REGISTRY)


def describe(name: str) -> dict[str, Any]:
    """A workflow as ``relaycast workflows --json`` and ``GET /workflows`` show it: its task,
    module, first docstring line and parameters (name, type, default, required)."""
    fn = FUNCTIONS[name]
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve
        hints = {}
    params = []
    for parameter in list(inspect.signature(fn).parameters.values())[1:]:
        if parameter.kind not in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            continue
        kind = hints.get(parameter.name, parameter.annotation)
        required = parameter.default is parameter.empty
        params.append({
            "name": parameter.name,
            "type": None if kind is parameter.empty else _type_name(kind),
            "default": None if required else _jsonable(parameter.default),
            "required": required,
        })
    doc = (inspect.getdoc(fn) or "").strip().splitlines()
    return {"name": name, "task": REGISTRY[name].name, "module": fn.__module__,
            "doc": doc[0] if doc else "", "params": params}


def _type_name(kind: Any) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
