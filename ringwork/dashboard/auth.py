"""HTTP basic auth for the dashboard, from ``RINGWORK_DASHBOARD_USER`` and
``RINGWORK_DASHBOARD_PASSWORD``.

Both set: every request but ``/healthz`` (a load balancer's probe has no password) must carry
them; neither set: no auth (bind to 127.0.0.1, or put the dashboard behind your own). One set
without the other is a configuration error, not a silently open dashboard. The comparison is
constant-time on both fields (``hmac.compare_digest``), so response times do not leak how much
of a guess was right.

Threads: the server's event loop (an ASGI middleware).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from typing import Any

from ringwork.errors import ConfigurationError

USER_VARIABLE = "RINGWORK_DASHBOARD_USER"
PASSWORD_VARIABLE = "RINGWORK_DASHBOARD_PASSWORD"

_DENIED = (
    "<!doctype html><html><head><meta charset=utf-8><title>401 - ringwork</title></head>"
    "<body><h1>401: sign in to the ringwork dashboard</h1>"
    "<p>{reason}</p></body></html>"
)


def credentials_from_environment() -> tuple[str, str] | None:
    user = os.environ.get(USER_VARIABLE) or None
    password = os.environ.get(PASSWORD_VARIABLE) or None
    if user is None and password is None:
        return None
    if user is None or password is None:
        missing = USER_VARIABLE if user is None else PASSWORD_VARIABLE
        raise ConfigurationError(
            f"dashboard basic auth needs both {USER_VARIABLE} and {PASSWORD_VARIABLE}: "
            f"{missing} is not set")
    return user, password


def check(header: str | None, user: str, password: str) -> str | None:
    """``None`` if ``header`` (an ``Authorization`` value) carries the credentials, else why
    not, in words for the page."""
    if not header:
        return "This dashboard needs a user name and password."
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return "wrong user name or password (use HTTP basic auth)."
    try:
        given_user, sep, given_password = base64.b64decode(value.strip(), validate=True
                                                           ).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "wrong user name or password (the Authorization header is not valid)."
    same_user = hmac.compare_digest(given_user.encode(), user.encode())
    same_password = hmac.compare_digest(given_password.encode(), password.encode())
    if not (sep and same_user and same_password):
        return "wrong user name or password."
    return None


class BasicAuth:
    """ASGI middleware: 401 with ``WWW-Authenticate`` unless the request carries the
    credentials; paths ending in one of ``open_paths`` pass without."""

    def __init__(self, app: Any, user: str, password: str,
                 open_paths: tuple[str, ...] = ("/healthz",)) -> None:
        self.app = app
        self.user = user
        self.password = password
        self.open_paths = open_paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].endswith(self.open_paths):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"authorization")
        reason = check(raw.decode("latin-1") if raw is not None else None,
                       self.user, self.password)
        if reason is None:
            await self.app(scope, receive, send)
            return
        from starlette.responses import HTMLResponse

        response = HTMLResponse(_DENIED.format(reason=reason), status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="ringwork"'})
        await response(scope, receive, send)
