"""relaycast's own top-level packages, and the user's modules that would shadow them.

The project's layout gives relaycast four top-level packages beside ``relaycast`` itself
(``config``, ``broadcasters``, ``workflows``, ``tasks``). A user's project often has a
``config.py`` or a ``tasks.py`` of its own; when its directory comes first on ``sys.path``
(``python script.py`` or ``python -c`` run there, or ``celery -A`` while it imports the app),
``import config`` would find the user's file and relaycast would fail deep inside with
``'config' is not a package``. :func:`ensure_ours` looks first and stops with one line
naming the file and how to fix it.

A package already imported from relaycast's own directory is never shadowed again (a module
is imported once per process), so :func:`ensure_ours`, called before the current directory
goes on ``sys.path`` (the CLI, the API, the worker importing ``RELAYCAST_WORKFLOWS``),
makes those safe from any file there.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

#: The top-level packages relaycast installs besides ``relaycast``.
PACKAGES = ("config", "broadcasters", "workflows", "tasks")
#: Where relaycast's packages live (site-packages, or the checkout for an editable install).
HOME = Path(__file__).resolve().parent.parent


class Shadowed(ImportError):
    """A module of the user's stands where one of relaycast's packages should be found."""

    def __init__(self, name: str, where: str) -> None:
        self.package = name
        self.where = where
        super().__init__(
            f"{where} shadows relaycast's {name!r} package (it comes first on sys.path): "
            f"rename it (or move it into your own package, e.g. acme/{name}.py), or run "
            f"from another directory")


def _origin(name: str) -> str | None:
    """Where ``import name`` would load it from now (None: nowhere)."""
    module = sys.modules.get(name)
    if module is not None:
        path = getattr(module, "__file__", None)
        return str(path) if path else repr(module)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return spec.origin or next(iter(spec.submodule_search_locations or []), None)


def _is_ours(name: str, origin: str) -> bool:
    try:
        return Path(origin).resolve() == (HOME / name / "__init__.py").resolve()
    except OSError:
        return False


def ensure_ours() -> None:
    """Import relaycast's four top-level packages, or raise :class:`Shadowed` naming the
    user's file that stands in the way (no package is imported from the wrong place)."""
    for name in PACKAGES:
        origin = _origin(name)
        if origin is not None and not _is_ours(name, origin):
            raise Shadowed(name, _shown(origin))
    for name in PACKAGES:
        importlib.import_module(name)


def _shown(origin: str) -> str:
    """A user's file as they would name it: relative to the current directory if inside."""
    try:
        return "./" + Path(origin).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (ValueError, OSError):
        return origin
