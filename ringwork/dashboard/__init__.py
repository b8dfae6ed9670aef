"""The web dashboard: ``app.dashboard()`` (an ASGI app to mount) and ``ringwork dashboard``.

Screens: overview, nodes, the partition map (owners, epochs, backlog and lag per partition, the
rebalances seen), tasks (backlog, run-time percentiles, failure rate), jobs (filters, a job's
attempts, retry and cancel), and the ordered keys held back by their head; live through
server-sent events. Built on Starlette, Jinja2 templates and a page of plain JavaScript: no
build step. Everything the screens read is in :mod:`ringwork.store.panels` and
:mod:`ringwork.status`.

Starlette, Jinja2 and uvicorn are imported only here and below, and only when a dashboard is
built: ``ringwork.app`` imports this package inside :meth:`App.dashboard`, so a worker process
never loads the web stack (a test checks it).

Modules: :mod:`.data` (what each screen shows), :mod:`.routes` (the URLs), :mod:`.pages`
(templates), :mod:`.live` (the event stream, the rebalance feed), :mod:`.auth` (basic auth),
:mod:`.guard` (error pages, read-only, same-origin POSTs), :mod:`.serve` (uvicorn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ringwork.dashboard.data import App


def build(app: App, *, read_only: bool = False, hide_payloads: bool = False, prefix: str = "",
          interval: float = 1.0) -> Any:
    """The dashboard of ``app`` as an ASGI application (Starlette).

    ``prefix``: the path it serves under (``/ops/ringwork``), for a server that runs it alone;
    mounted in another app with ``Mount("/x", app=...)`` it needs none (links follow the mount).
    ``/healthz`` also answers at the root when a prefix is given.
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Mount, Route

    from ringwork.dashboard.auth import BasicAuth, credentials_from_environment
    from ringwork.dashboard.guard import Guard
    from ringwork.dashboard.routes import Options, Screens

    prefix = normalize_prefix(prefix)
    screens = Screens(app, Options(read_only=read_only, hide_payloads=hide_payloads,
                                   interval=interval))
    routes: list[Any] = screens.routes()
    if prefix:
        routes = [Route("/healthz", screens.healthz), Mount(prefix, routes=routes)]
    middleware = []
    credentials = credentials_from_environment()
    if credentials is not None:
        middleware.append(Middleware(BasicAuth, user=credentials[0], password=credentials[1]))
    middleware.append(Middleware(Guard, render=screens.pages.error_page, read_only=read_only))

    async def not_found(request: Any, exc: Exception) -> Any:
        return screens.pages.error(request, 404, "Not found",
                                   f"nothing at {request.url.path}: see the links above")

    return Starlette(routes=routes, middleware=middleware, exception_handlers={404: not_found})


def normalize_prefix(prefix: str) -> str:
    """``ops/rw/`` -> ``/ops/rw``; ``/`` and the empty string -> no prefix."""
    from ringwork.errors import ConfigurationError

    text = prefix.strip().strip("/")
    if any(c in text for c in "?#%\\ ") or "//" in text:
        raise ConfigurationError(
            f"--prefix must be a plain path like /ops/ringwork, not {prefix!r}")
    return f"/{text}" if text else ""


__all__ = ["build", "normalize_prefix"]
