"""Web origins (``scheme://host[:port]``), as browsers send them in ``Origin`` and as
``RELAYCAST_ALLOWED_ORIGINS`` lists them: one spelling for both, so they compare as strings."""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalised_origin(text: str) -> str | None:
    """``text`` as browsers serialise an origin — scheme and host in lower case, no default
    port, nothing after the port — or None when it is not an ``http(s)`` origin (``null``,
    a path, a query, user info, no host)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if (scheme not in _DEFAULT_PORTS or not host or parts.path not in ("", "/") or parts.query
            or parts.fragment or parts.username is not None or parts.password is not None):
        return None
    shown_host = f"[{host}]" if ":" in host else host
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{shown_host}"
    return f"{scheme}://{shown_host}:{port}"


def parse_origins(value: str) -> tuple[str, ...]:
    """A comma-separated list of origins, each normalised; ValueError saying which entry is
    not one (by position: configuration messages never repeat a value)."""
    origins: list[str] = []
    items = [part.strip() for part in value.split(",") if part.strip()]
    for number, item in enumerate(items, start=1):
        origin = normalised_origin(item)
        if origin is None:
            raise ValueError(f"entry {number} is not an origin: use scheme://host[:port] (http "
                             "or https, no path), comma-separated, e.g. "
                             "https://admin.example.com,http://localhost:3000")
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)
