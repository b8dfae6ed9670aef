"""``ringwork worker``, ``run`` and ``status``: the processes of a cluster and what they report.

Runs on the main thread of a ``ringwork`` process (``worker`` hands it to the worker runtime).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import click

from ringwork.cli.options import database_option, load_app, migrate_option
from ringwork.settings import parse_duration


@click.command()
@click.argument("app_spec", metavar="MODULE:APP")
@database_option
@migrate_option
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    envvar="RINGWORK_CONCURRENCY",
    help="Jobs in flight in this process (default 32).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    help="Seconds in-flight jobs get on "
    "SIGTERM/SIGINT before the worker exits anyway (default 30).",
)
@click.option(
    "--bind",
    envvar="RINGWORK_BIND",
    help="Address this worker's ROUTER listens on, tcp://HOST:PORT (default "
    "tcp://127.0.0.1:*, a free port). The PUB socket listens on PORT+1 (see --pub-port).",
)
@click.option(
    "--pub-port",
    type=click.IntRange(min=0, max=65535),
    envvar="RINGWORK_PUB_PORT",
    help="Port of the PUB socket on the bind host (default: the --bind port + 1; "
    "0: any free port).",
)
@click.option(
    "--advertise",
    envvar="RINGWORK_ADVERTISE",
    help="Host (or tcp://HOST:PORT) other processes use to reach this worker.",
)
@click.option(
    "--curve-key-file",
    envvar="RINGWORK_CURVE_KEY_FILE",
    type=click.Path(),
    help="Cluster key pair from `ringwork keys`: encrypt and authenticate sockets.",
)
@click.option(
    "--session-timeout",
    type=click.FloatRange(min=0.5),
    help="Seconds of silence before a member is declared dead (default 3).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0),
    envvar="RINGWORK_METRICS_PORT",
    help="Serve Prometheus metrics on this port of the bind host (0: any free port, logged as "
    "event=metrics_serving).",
)
@click.option(
    "--retain-succeeded",
    metavar="AGE",
    help="Delete succeeded jobs this long after they finished: 30s, 2h, 7d or seconds; "
    "0 keeps them (default 1d). Env: RINGWORK_RETAIN_SUCCEEDED.",
)
@click.option(
    "--retain-cancelled", metavar="AGE", help="Same for cancelled jobs (default 7d)."
)
@click.option("--retain-dead", metavar="AGE", help="Same for dead jobs (default 30d).")
@click.option(
    "--retain-nodes",
    metavar="AGE",
    help="Delete the registry rows of nodes not seen this long (default 1h; 0 keeps them).",
)
def worker(
    app_spec: str,
    database_url: str | None,
    no_migrate: bool,
    concurrency: int | None,
    grace: float | None,
    bind: str | None,
    pub_port: int | None,
    advertise: str | None,
    curve_key_file: str | None,
    session_timeout: float | None,
    metrics_port: int | None,
    retain_succeeded: str | None,
    retain_cancelled: str | None,
    retain_dead: str | None,
    retain_nodes: str | None,
) -> None:
    """Run a worker process for MODULE:APP; it joins the app's cluster.

    Exits 0 after a graceful stop (SIGTERM/SIGINT), 70 if its cluster node fails (restart it).
    """
    from ringwork.worker import Worker

    app = load_app(
        app_spec,
        database_url,
        no_migrate,
        concurrency=concurrency,
        shutdown_grace=grace,
        bind=bind,
        pub_port=pub_port,
        advertise=advertise,
        curve_key_file=curve_key_file,
        session_timeout=session_timeout,
        metrics_port=metrics_port,
        retain_succeeded=_age("--retain-succeeded", retain_succeeded),
        retain_cancelled=_age("--retain-cancelled", retain_cancelled),
        retain_dead=_age("--retain-dead", retain_dead),
        retain_nodes=_age("--retain-nodes", retain_nodes),
    )
    runner = Worker(app)
    code = runner.run()
    if runner.failure is not None:
        # Handler threads may still be running abandoned jobs: do not wait for them (a normal
        # exit joins them); their partitions' next owner runs those jobs again.
        click.echo(f"error: {runner.failure}; worker exits with code {code}", err=True)
        logging.shutdown()
        os._exit(code)
    app.close()
    sys.exit(code)


def _age(flag: str, text: str | None) -> float | None:
    return None if text is None else parse_duration(text, flag)


@click.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option(
    "--processes", type=click.IntRange(min=1), required=True, help="Worker processes to start."
)
@click.option("--concurrency", type=click.IntRange(min=1), help="Per process.")
@database_option
@migrate_option
def run(
    app_spec: str,
    processes: int,
    concurrency: int | None,
    database_url: str | None,
    no_migrate: bool,
) -> None:
    """Run a local cluster of N worker processes; signals are forwarded to them.

    A worker that dies is restarted, with back-off, at most 5 times a minute per slot.
    """
    from ringwork.supervisor import supervise

    load_app(app_spec, database_url, no_migrate)  # fail here, once, on a bad app or URL
    argv = [sys.executable, "-m", "ringwork.cli", "worker", app_spec]
    if database_url:
        argv += ["--database-url", database_url]
    if no_migrate:
        argv.append("--no-migrate")
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    sys.exit(supervise(argv, processes))


@click.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--watch", is_flag=True, help="Refresh every second until interrupted.")
@database_option
@migrate_option
def status(
    app_spec: str, as_json: bool, watch: bool, database_url: str | None, no_migrate: bool
) -> None:
    """Leader, term, nodes and their partitions, job counts and backlog."""
    from rich.live import Live

    from ringwork.console import status_view, terminal
    from ringwork.status import collect

    app = load_app(app_spec, database_url, no_migrate)
    if as_json and not watch:
        click.echo(json.dumps(collect(app)))
    elif as_json:
        while True:
            click.echo(json.dumps(collect(app)), nl=True)
            time.sleep(1.0)
    elif watch:
        with Live(status_view(collect(app)), console=terminal(), auto_refresh=False) as live:
            while True:
                time.sleep(1.0)
                live.update(status_view(collect(app)), refresh=True)
    else:
        terminal().print(status_view(collect(app)))
    app.close()
