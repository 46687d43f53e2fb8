"""Who may call the API: a bearer token for scripts, a session cookie for the viewer's pages.

With ``RELAYCAST_ADMIN_TOKEN`` set:

* scripts send ``Authorization: Bearer <token>``;
* a person opens the sign-in URL that ``relaycast api`` prints (``…/ui/?token=<token>``, as
  Jupyter does). The page answers ``303 See Other`` to the same URL without the token and
  sets an ``HttpOnly``, ``SameSite=Strict`` session cookie (``Secure`` over HTTPS). The
  cookie never holds the token itself: its value is the hex HMAC-SHA256 of a fixed label
  keyed by the token, so it cannot be turned back into the token, and rotating the token
  signs every browser out. It authorises exactly what the bearer token does (history,
  runs, status, ``/pusher/auth``); ``SameSite=Strict`` keeps other sites' forms and
  scripts from using it.

Without a valid bearer or cookie, JSON endpoints answer 401 JSON and pages answer 401 with
a small HTML page saying how to sign in. Without a token configured, everything is open
(``relaycast api`` then listens on loopback only).

**Application channels** (``relaycast.broadcast(channel, ...)``, published on
``{prefix}{channel}``): ``/pusher/auth`` signs them for the admin token or session, like
relaycast's own. ``RELAYCAST_CHANNEL_AUTHORIZER=module:function`` lets the application
decide for everyone else: ``function(request, channel)`` gets the Starlette ``Request`` (its
headers and cookies: the app's own session) and the channel's name as the app gave it to
``broadcast()`` (without the prefix), and returns a bool (or an awaitable of one). It is
asked about app channels only, never about relaycast's own (logs, admin events, health:
those stay the admin's). It is imported when the API starts (the current directory first on
``sys.path``, as ``RELAYCAST_WORKFLOWS`` is); a module that does not import, or a name that
is not a callable, stops start-up with one line naming the variable. An authorizer that
raises refuses (403) and the error is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, HTTPException, Request, Security
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import APIKeyCookie, HTTPBearer

from config import ConfigError, Settings

logger = logging.getLogger(__name__)

#: ``RELAYCAST_CHANNEL_AUTHORIZER``: (request, app channel name) -> may subscribe?
ChannelAuthorizer = Callable[[Request, str], bool | Awaitable[bool]]

SESSION_COOKIE = "relaycast_session"
_SESSION_LABEL = b"relaycast viewer session v1"
_SIGN_IN_PAGE = Path(__file__).resolve().parent / "static" / "signin.html"

#: Headers every page carries: no caching of signed-in pages, no token in a Referer, and a
#: policy that allows only this origin's scripts and styles (WebSockets may go elsewhere:
#: the Pusher-protocol server).
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; connect-src 'self' ws: wss:; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
}


def session_value(token: str) -> str:
    """The session cookie's value for ``token``: hex HMAC-SHA256 of a fixed label."""
    return hmac.new(token.encode("utf-8"), _SESSION_LABEL, hashlib.sha256).hexdigest()


#: The two ways in, as the OpenAPI document names them (a request needs either). They only
#: document: :meth:`Auth.require` decides, so they never answer anything themselves.
BEARER_SCHEME = HTTPBearer(scheme_name="adminToken", auto_error=False,
                           description="`Authorization: Bearer <RELAYCAST_ADMIN_TOKEN>`.")
SESSION_SCHEME = APIKeyCookie(name=SESSION_COOKIE, scheme_name="viewerSession", auto_error=False,
                              description="The viewer's session cookie, set by opening the "
                              "sign-in URL `relaycast api` prints (`/ui/?token=<token>`).")


class Auth:
    """The one authentication policy of the API, built from the configured token."""

    def __init__(self, token: str | None) -> None:
        self._token = token or None
        self._session = session_value(token) if token else None

    @classmethod
    def for_settings(cls, settings: Settings) -> Auth:
        """The policy for ``RELAYCAST_ADMIN_TOKEN`` (unset: everything open)."""
        return cls(settings.admin_token.get_secret_value() if settings.admin_token else None)

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def token_ok(self, given: object) -> bool:
        """``given`` is the token (no token configured: anything is)."""
        if self._token is None:
            return True
        return isinstance(given, str) and hmac.compare_digest(given.strip(), self._token)

    def session_ok(self, given: object) -> bool:
        """``given`` is the value of a valid session cookie."""
        if self._session is None:
            return True
        return isinstance(given, str) and hmac.compare_digest(given, self._session)

    def _bearer_ok(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(given)

    def _cookie_ok(self, request: Request) -> bool:
        return self.session_ok(request.cookies.get(SESSION_COOKIE))

    def allowed(self, request: Request) -> bool:
        return not self.enabled or self._bearer_ok(request) or self._cookie_ok(request)

    def security(self) -> list[Any]:
        """Dependencies that declare the bearer token and the session cookie in the OpenAPI
        document (as alternatives), when a token is configured; none when everything is open."""
        return [Security(BEARER_SCHEME), Security(SESSION_SCHEME)] if self.enabled else []

    def guard(self) -> list[Any]:
        """The dependencies of a route behind the token: the check and its declaration."""
        return [Depends(self.require), *self.security()]

    def require(self, request: Request) -> None:
        """FastAPI dependency of every JSON endpoint: bearer token or session cookie."""
        if not self.allowed(request):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token or session "
                                "cookie (sign in at /ui/?token=...)",
                                headers={"WWW-Authenticate": "Bearer"})

    def page_gate(self, request: Request) -> Response | None:
        """The sign-in flow of a page: None to serve it, else the answer to send instead.

        ``?token=`` right: 303 to the same URL without it, setting the session cookie;
        wrong: 401. No token in the URL: the page if the cookie (or a bearer) is valid,
        else 401 with the sign-in page.
        """
        if not self.enabled:
            return None
        assert self._token is not None and self._session is not None
        given = request.query_params.get("token")
        if given is not None:
            if not hmac.compare_digest(given, self._token):
                return sign_in_page(wrong_token=True)
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            answer = RedirectResponse(target, status_code=303, headers=dict(PAGE_HEADERS))
            answer.set_cookie(SESSION_COOKIE, self._session, httponly=True, samesite="strict",
                              secure=request.url.scheme == "https", path="/")
            return answer
        if self.allowed(request):
            return None
        return sign_in_page(wrong_token=False)


def load_channel_authorizer(settings: Settings) -> ChannelAuthorizer | None:
    """The function ``RELAYCAST_CHANNEL_AUTHORIZER`` names (None when unset), or
    :class:`ConfigError` in one line naming the variable."""
    spec = settings.channel_authorizer
    if spec is None:
        return None
    from celery.utils.imports import cwd_in_path

    module_name, _, function_name = spec.partition(":")
    try:
        with cwd_in_path():
            module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module
        reason = str(exc).strip().splitlines()
        raise ConfigError(f"RELAYCAST_CHANNEL_AUTHORIZER: cannot import {module_name!r}: "
                          f"{type(exc).__name__}" + (f": {reason[0]}" if reason else "")) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"RELAYCAST_CHANNEL_AUTHORIZER: {module_name!r} has no callable "
                          f"{function_name!r}")
    authorizer: ChannelAuthorizer = function
    return authorizer


async def ask_authorizer(authorizer: ChannelAuthorizer, request: Request, name: str) -> bool:
    """What the application's authorizer says about ``name``; False (logged) if it raises."""
    try:
        answer = authorizer(request, name)
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception:
        logger.exception("RELAYCAST_CHANNEL_AUTHORIZER raised for channel %r: refused", name)
        return False
    return answer is True


def sign_in_page(*, wrong_token: bool) -> HTMLResponse:
    """401 with the static sign-in help page (it echoes nothing from the request)."""
    html = _SIGN_IN_PAGE.read_text(encoding="utf-8")
    notice = ("The token in that link is wrong, or was changed since the link was printed."
              if wrong_token else "This page needs you to sign in.")
    return HTMLResponse(html.replace("{{notice}}", notice), status_code=401,
                        headers=dict(PAGE_HEADERS))
