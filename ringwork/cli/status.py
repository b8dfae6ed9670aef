"""``ringwork status``: the cluster as the database sees it, once or live (``--watch``).

``--watch`` on a terminal is a full-screen view (rich ``Live`` on the alternate screen: the
shell's screen comes back on exit) redrawn every ``--interval`` seconds, with the partition map
and the throughput measured between two refreshes. Piped (no terminal), it prints one frame per
refresh instead, and ``--json --watch`` one JSON document a line. Ctrl-C (SIGINT) ends any of
them with exit code 0: it is how a watch is meant to end.

Runs on the main thread of a ``ringwork`` process.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ringwork.app import App
from ringwork.cli.options import (
    app_argument,
    database_option,
    json_option,
    load_app,
    migrate_option,
)


@click.command()
@app_argument
@json_option("Print one JSON object (with --watch: one a line).")
@click.option("--watch", is_flag=True, help="Keep refreshing until Ctrl-C (full screen on a "
              "terminal: partition map and throughput).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              metavar="SECONDS", help="Seconds between two refreshes of --watch.")
@database_option
@migrate_option
def status(app_spec: str, as_json: bool, watch: bool, interval: float,
           database_url: str | None, no_migrate: bool) -> None:
    """Leader, term, nodes and their partitions, job counts and backlog."""
    from ringwork.console import status_view, terminal
    from ringwork.status import collect

    app = load_app(app_spec, database_url, no_migrate)
    try:
        if not watch:
            if as_json:
                click.echo(json.dumps(collect(app)))
            else:
                terminal().print(status_view(collect(app)))
            return
        try:
            if as_json:
                _watch_json(app, interval)
            else:
                _watch(app, interval)
        except KeyboardInterrupt:
            pass  # Ctrl-C: the way a watch ends, exit 0
    finally:
        app.close()


def _watch_json(app: App, interval: float) -> None:
    from ringwork.status import collect

    while True:
        click.echo(json.dumps(collect(app)))
        time.sleep(interval)


def _watch(app: App, interval: float) -> None:
    from rich.live import Live

    from ringwork.console import Throughput, terminal, watch_view
    from ringwork.status import collect

    console = terminal()
    rate = Throughput()

    def frame() -> Any:
        doc = collect(app)
        return watch_view(doc, rate.update(doc, time.monotonic()), interval)

    if not console.is_terminal:  # piped: a frame per refresh, one after the other
        while True:
            console.print(frame())
            console.file.flush()
            time.sleep(interval)
    with Live(frame(), console=console, screen=True, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(frame(), refresh=True)
