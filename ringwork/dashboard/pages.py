"""Rendering: the Jinja2 templates in ``templates/``, with the values every page needs.

Autoescaping is on for every template, so a job's key, payload or traceback is shown as text,
whatever it holds. ``base`` (the request's ``root_path``) starts every link and static file
path, so the dashboard works under any prefix.

Threads: any (the environment is built once and only read afterwards).
"""

from __future__ import annotations

import datetime as dt
from importlib import metadata
from typing import Any

import jinja2


def _version() -> str:
    try:
        return metadata.version("ringwork")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "dev"


def age(seconds: float | None) -> str:
    """``5 ms``, ``2.4s``, ``12s``, ``3m 05s``, ``2h 10m``, ``4d 1h``; a dash for none."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def stamp(when: dt.datetime | float | None) -> str:
    if when is None:
        return "—"
    if isinstance(when, (int, float)):
        when = dt.datetime.fromtimestamp(when, dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def took(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None or end is None:
        return "—"
    return age((end - start).total_seconds())


class Pages:
    """The template environment and the dashboard-wide values (mode, version)."""

    def __init__(self, *, read_only: bool, hide_payloads: bool) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("ringwork.dashboard", "templates"),
            autoescape=True, trim_blocks=True, lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters.update(age=age, percent=percent, stamp=stamp)
        self.env.globals.update(took=took, version=_version(), read_only=read_only,
                                hide_payloads=hide_payloads)

    def html(self, scope: Any, name: str, context: dict[str, Any]) -> str:
        path = scope.get("path", "")
        base = scope.get("root_path", "")
        return self.env.get_template(name).render(
            base=base, here=path[len(base):] if path.startswith(base) else path, **context)

    def render(self, request: Any, name: str, context: dict[str, Any], status: int = 200) -> Any:
        from starlette.responses import HTMLResponse

        return HTMLResponse(self.html(request.scope, name, context), status_code=status)

    def error(self, request: Any, status: int, title: str, message: str) -> Any:
        return self.error_page(request.scope, status, title, message)

    def error_page(self, scope: Any, status: int, title: str, message: str) -> Any:
        from starlette.responses import HTMLResponse

        text = self.html(scope, "error.html", {"status": status, "title": title,
                                               "message": message})
        return HTMLResponse(text, status_code=status)
