"""``ringwork worker`` and ``run``: the processes of a cluster.

Runs on the main thread of a ``ringwork`` process (``worker`` hands it to the worker runtime).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from ringwork.cli.options import app_argument
from ringwork.cli.settings_flags import configured_app, settings_options, worker_argv
from ringwork.cli.variables import worker_log_argv
from ringwork.errors import ConfigurationError


@click.command()
@app_argument
@settings_options("worker")
def worker(app_spec: str, settings: dict[str, Any]) -> None:
    """Run a worker process for MODULE:APP; it joins the app's cluster.

    Every setting is a flag here and a RINGWORK_* variable (docs/operations.md, "Settings").
    Exits 0 after a graceful stop (SIGTERM/SIGINT), 70 if its cluster node fails (restart it).
    """
    from ringwork.worker import Worker

    app = configured_app(app_spec, settings)
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


@click.command()
@app_argument
@click.option(
    "--processes", type=click.IntRange(min=1), required=True, help="Worker processes to start."
)
@settings_options("run")
def run(app_spec: str, processes: int, settings: dict[str, Any]) -> None:
    """Run a local cluster of N worker processes; signals are forwarded to them.

    The settings flags and the log options are passed on to every worker (addresses, ports and
    --node-name are not: each worker listens on free loopback ports under its own id; worker N
    serves metrics on --metrics-port + N). A worker that dies is restarted, with back-off, at
    most 5 times a minute per slot.
    """
    from ringwork.supervisor import supervise

    app = configured_app(app_spec, settings)  # fail here, once, on a bad app, URL or setting
    if app.settings.node_name and processes > 1:
        # Its workers inherit the variable: N processes under one name would fence each other.
        raise ConfigurationError(
            f"node_name ({app.settings.node_name!r}, from RINGWORK_NODE_NAME or the app) names "
            f"one worker, and `run` would start {processes} under it: unset it, or start each "
            "worker with `ringwork worker --node-name NAME`"
        )
    # Each worker its own metrics port, base + slot (given to every one, so that a
    # RINGWORK_METRICS_PORT they inherit cannot put them all on one port).
    settings.pop("metrics_port", None)
    base = app.settings.metrics_port
    if base > 0 and base + processes - 1 > 65535:
        raise ConfigurationError(
            f"--metrics-port {base} with --processes {processes}: the workers' ports "
            f"{base}..{base + processes - 1} go past 65535")
    slot_args = None if base < 0 else (
        lambda n: ["--metrics-port", str(base + n if base else 0)])
    argv = [sys.executable, "-m", "ringwork.cli", "worker", app_spec, *worker_argv(settings),
            *worker_log_argv()]
    sys.exit(supervise(argv, processes, slot_args=slot_args))

