"""The ``ringwork`` command line. Commands only parse, call into the library and print.

Every failure the user can cause (unimportable app, unknown task, bad JSON, bad or unreachable
database URL, partition-count mismatch) ends as one ``Error: ...`` line and a non-zero exit,
never a traceback; output piped into a reader that leaves early ends quietly (see
:mod:`ringwork.cli.group`). ``RINGWORK_DEBUG=1`` shows tracebacks for unexpected errors.

One module per concern: :mod:`~ringwork.cli.options` (shared options, loading ``MODULE:APP``),
:mod:`~ringwork.cli.settings_flags` (a flag per setting), :mod:`~ringwork.cli.worker` (``worker``,
``run``), :mod:`~ringwork.cli.status`, :mod:`~ringwork.cli.jobs`
(``enqueue``, ``jobs``), :mod:`~ringwork.cli.cron`, :mod:`~ringwork.cli.db`,
:mod:`~ringwork.cli.keys`, :mod:`~ringwork.cli.variables` (the ``RINGWORK_*`` variables, the
log options of every command). ``main`` is the console entry point; ``python -m ringwork.cli``
runs it too.
"""

from __future__ import annotations

import sys

import click

from ringwork.cli.cron import cron
from ringwork.cli.db import db
from ringwork.cli.group import RingworkGroup, flush_at_exit
from ringwork.cli.jobs import enqueue, jobs
from ringwork.cli.keys import keys
from ringwork.cli.status import status
from ringwork.cli.variables import PREFIX, finish, log_options
from ringwork.cli.worker import run, worker
from ringwork.log import configure as configure_logging


@click.group(
    cls=RingworkGroup,
    params=log_options(root=True),
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": PREFIX},
)
@click.version_option(package_name="ringwork")
def cli(log_level: str, log_format: str) -> None:
    """ringwork: partitioned SQL jobs, run by a cluster of worker processes.

    Every option is also an environment variable, named in each command's --help:
    RINGWORK_<SETTING> for the settings, RINGWORK_APP for MODULE:APP, RINGWORK_<COMMAND>_<OPTION>
    for the rest. --log-level and --log-format go before or after the command.
    """
    configure_logging(log_level, log_format)


@click.command()
@click.option("--jobs", type=click.IntRange(min=10), default=3000, show_default=True)
@click.option("--processes", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the temporary directory for inspection.")
def demo(jobs: int, processes: int, keep: bool) -> None:
    """A self-contained showcase on a temporary SQLite database."""
    from ringwork.demo import run_demo

    sys.exit(run_demo(job_count=jobs, processes=processes, keep=keep))


for command in (worker, enqueue, jobs, status, run, keys, db, demo, cron):
    cli.add_command(command)
finish(cli)


def main() -> None:
    try:
        cli(prog_name="ringwork")
    finally:
        flush_at_exit()


__all__ = ["cli", "main"]
