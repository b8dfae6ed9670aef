"""``ringwork dashboard MODULE:APP``: the web dashboard, served by uvicorn.

Runs on the main thread of a ``ringwork`` process; Starlette and uvicorn are imported only
when the command runs (``ringwork --help`` and the worker never load them).
"""

from __future__ import annotations

import click

from ringwork.cli.options import app_argument, database_option, load_app, migrate_option


@click.command()
@app_argument
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; set a password then).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0: any free port, logged at start).")
@click.option("--read-only", is_flag=True, help="No retry or cancel buttons; POSTs refused.")
@click.option("--hide-payloads", is_flag=True, help="Never show job payloads or results.")
@click.option("--prefix", default="", metavar="/PATH",
              help="Serve under this path (behind a proxy that keeps it), e.g. /ops/ringwork.")
@database_option
@migrate_option
def dashboard(app_spec: str, host: str, port: int, read_only: bool, hide_payloads: bool,
              prefix: str, database_url: str | None, no_migrate: bool) -> None:
    """Serve the web dashboard of MODULE:APP: nodes, partition map, tasks, jobs.

    Basic auth when RINGWORK_DASHBOARD_USER and RINGWORK_DASHBOARD_PASSWORD are set;
    /healthz answers without it (docs/dashboard.md).
    """
    from ringwork.dashboard import normalize_prefix
    from ringwork.dashboard.serve import serve

    app = load_app(app_spec, database_url, no_migrate)
    clean = normalize_prefix(prefix)
    asgi = app.dashboard(read_only=read_only, hide_payloads=hide_payloads, prefix=clean)
    try:
        serve(asgi, host, port, clean)
    finally:
        app.close()
