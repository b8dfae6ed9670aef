"""What stands between a request and a stack trace: error pages, read-only mode, and a check
that a button's POST came from the dashboard's own page.

* An exception a screen raises becomes a page with one line and a status: a
  :class:`~ringwork.errors.DatabaseError` is 503 (the database is away; the page says so), any
  other 500. The log gets one line too (``event=dashboard_error``), never the traceback: the
  reason is in the line, and ``RINGWORK_DEBUG=1`` (as for the CLI) logs the traceback.
* Read-only mode refuses every POST with 403, whatever the page showed.
* A POST whose ``Origin`` names another site is refused (403): basic auth credentials ride on
  every request the browser makes, a form on another site included.

Threads: the server's event loop (an ASGI middleware).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ringwork.errors import DatabaseError
from ringwork.log import log_event


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


#: Builds the error page: (request scope, status, title, message) -> an ASGI response.
Render = Callable[[Any, int, str, str], Any]


class Guard:
    """ASGI middleware applying the rules in the module docstring."""

    def __init__(self, app: Any, render: Render, read_only: bool) -> None:
        self.app = app
        self.render = render
        self.read_only = read_only

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST":
            refusal = self._refusal(scope)
            if refusal is not None:
                await self.render(scope, 403, "Not allowed", refusal)(scope, receive, send)
                return
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if isinstance(exc, DatabaseError):
                status, title = 503, "Database unavailable"
            else:
                status, title = 500, "Something went wrong"
            log_event("dashboard_error", logging.WARNING, path=scope.get("path", ""),
                      status=status, error=f"{type(exc).__name__}: {one_line(exc)}")
            if os.environ.get("RINGWORK_DEBUG"):
                logging.getLogger("ringwork").exception("dashboard_error")
            if not started:
                page = self.render(scope, status, title, one_line(exc))
                await page(scope, receive, send)

    def _refusal(self, scope: Any) -> str | None:
        if self.read_only:
            return "This dashboard is read-only: it changes no job."
        headers = dict(scope.get("headers") or [])
        origin = headers.get(b"origin")
        host = headers.get(b"host")
        if (origin and origin != b"null" and host
                and urlsplit(origin.decode("latin-1")).netloc.encode("latin-1") != host):
            return "This form was not sent from the dashboard's own page."
        return None
