"""The ``ringwork`` command line. Commands only parse, call into the library and print.

Every failure the user can cause (unimportable app, unknown task, bad JSON, bad or unreachable
database URL, partition-count mismatch) ends as one ``Error: ...`` line and a non-zero exit,
never a traceback. ``RINGWORK_DEBUG=1`` shows tracebacks for unexpected errors.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ringwork.app import App
from ringwork.errors import AppImportError, ConfigurationError, PayloadError, RingworkError
from ringwork.job import JobRecord
from ringwork.log import configure as configure_logging

F = TypeVar("F", bound=Callable[..., Any])


class RingworkGroup(click.Group):
    """Turns library errors into one ``Error:`` line (click prints it) and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except RingworkError as exc:
            raise click.ClickException(_one_line(exc)) from None
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:
            if os.environ.get("RINGWORK_DEBUG"):
                raise
            raise click.ClickException(
                f"internal error: {type(exc).__name__}: {_one_line(exc)} "
                "(set RINGWORK_DEBUG=1 for a traceback)"
            ) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def database_option(fn: F) -> F:
    return click.option(
        "--database-url",
        envvar="RINGWORK_DATABASE_URL",
        help="SQLAlchemy URL (sqlite:///file.db or postgresql://...). "
        "Env: RINGWORK_DATABASE_URL. Default: the app's, else sqlite:///ringwork.db.",
    )(fn)


def migrate_option(fn: F) -> F:
    return click.option(
        "--no-migrate", is_flag=True, help="Do not apply pending migrations; fail if behind."
    )(fn)


def load_app(
    spec: str, database_url: str | None = None, no_migrate: bool = False, **overrides: Any
) -> App:
    """Import ``MODULE:APP`` (from the working directory too) and apply CLI overrides."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise AppImportError(f"expected MODULE:APP (e.g. workers.example:app), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise AppImportError(f"cannot import {module_name!r}: {reason}") from None
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise AppImportError(f"{spec!r} is not a ringwork App (found {type(app).__name__})")
    app.configure(database_url=database_url, migrate=False if no_migrate else None, **overrides)
    return app


@click.group(cls=RingworkGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    envvar="RINGWORK_LOG_LEVEL",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.version_option(package_name="ringwork")
def cli(log_level: str) -> None:
    """ringwork: partitioned SQL jobs, run by a cluster of worker processes."""
    configure_logging(log_level)


@cli.command()
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


@cli.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.argument("task")
@click.option("--key", required=True, help="Partitioning key; '{i}' is replaced by 0..N-1.")
@click.option("--payload", default=None, help="JSON payload.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--priority", type=int, default=None, help="Higher runs first.")
@click.option("--delay", type=click.FloatRange(min=0), default=None, help="Seconds to wait.")
@click.option("--dedupe-key", default=None, help="Skip if an unfinished job has this key.")
@database_option
@migrate_option
def enqueue(
    app_spec: str,
    task: str,
    key: str,
    payload: str | None,
    count: int,
    priority: int | None,
    delay: float | None,
    dedupe_key: str | None,
    database_url: str | None,
    no_migrate: bool,
) -> None:
    """Enqueue COUNT jobs of TASK."""
    app = load_app(app_spec, database_url, no_migrate)
    app.get_task(task)  # unknown task: fail before touching the database
    try:
        data = json.loads(payload) if payload is not None else None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"--payload is not valid JSON: {exc}") from None
    jobs = [
        app.build_job(
            task,
            key.replace("{i}", str(i)),
            data,
            delay=delay,
            priority=priority,
            dedupe_key=dedupe_key,
        )
        for i in range(count)
    ]
    ids = app.enqueue_many(jobs)
    if len(ids) <= 20:
        for job_id in ids:
            click.echo(job_id)
    else:
        click.echo(f"enqueued {len(ids)} jobs of {task} (ids {ids[0]}..{ids[-1]})")
    app.close()


@cli.group()
@click.argument("app_spec", metavar="MODULE:APP")
@database_option
@migrate_option
@click.pass_context
def jobs(ctx: click.Context, app_spec: str, database_url: str | None, no_migrate: bool) -> None:
    """Inspect and manage jobs: ringwork jobs MODULE:APP list|show|retry|cancel."""
    app = load_app(app_spec, database_url, no_migrate)
    ctx.obj = app
    ctx.call_on_close(app.close)


@jobs.command("list")
@click.option("--state", type=click.Choice(["queued", "running", "succeeded", "dead", "cancelled"]))
@click.option("--task", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def jobs_list(app: App, state: str | None, task: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    from ringwork.console import jobs_table

    records = app.store.list_jobs(state=state, task=task, limit=limit)
    if as_json:
        for record in records:
            click.echo(json.dumps(_record_dict(record)))
    else:
        jobs_table(records)


@jobs.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def jobs_show(app: App, job_id: int, as_json: bool) -> None:
    """Show one job in full, including its last error."""
    from ringwork.errors import JobNotFound

    record = app.get_job(job_id)
    if record is None:
        raise JobNotFound(f"no job {job_id} in cluster {app.settings.cluster!r}")
    data = _record_dict(record)
    if as_json:
        click.echo(json.dumps(data))
        return
    for name, value in data.items():
        if name == "last_error" and value:
            click.echo(f"{name}:\n  " + str(value).replace("\n", "\n  "))
        else:
            click.echo(f"{name}: {value}")


@jobs.command("retry")
@click.argument("job_id", type=int)
@click.pass_obj
def jobs_retry(app: App, job_id: int) -> None:
    """Queue a dead or cancelled job again."""
    app.retry(job_id)
    click.echo(f"job {job_id} queued again")


@jobs.command("cancel")
@click.argument("job_id", type=int)
@click.pass_obj
def jobs_cancel(app: App, job_id: int) -> None:
    """Cancel a queued job."""
    app.cancel(job_id)
    click.echo(f"job {job_id} cancelled")


def _record_dict(record: JobRecord) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(record)
    for name, value in data.items():
        if hasattr(value, "isoformat"):
            data[name] = value.isoformat()
    return data


@cli.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--watch", is_flag=True, help="Refresh every second until interrupted.")
@database_option
@migrate_option
def status(
    app_spec: str, as_json: bool, watch: bool, database_url: str | None, no_migrate: bool
) -> None:
    """Leader, term, nodes and their partitions, job counts and backlog."""
    import time

    from rich.live import Live

    from ringwork.console import status_view
    from ringwork.status import collect

    app = load_app(app_spec, database_url, no_migrate)
    if as_json and not watch:
        click.echo(json.dumps(collect(app)))
    elif as_json:
        while True:
            click.echo(json.dumps(collect(app)), nl=True)
            time.sleep(1.0)
    elif watch:
        with Live(status_view(collect(app)), auto_refresh=False) as live:
            while True:
                time.sleep(1.0)
                live.update(status_view(collect(app)), refresh=True)
    else:
        from rich.console import Console

        Console().print(status_view(collect(app)))
    app.close()


@cli.command()
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


@cli.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    required=True,
    help="File to write the cluster key pair to (mode 0600).",
)
@click.option(
    "--force", is_flag=True, help="Replace an existing file (its old key stops working)."
)
def keys(output: str, force: bool) -> None:
    """Generate a CURVE key pair that encrypts and authenticates the cluster's sockets.

    Give every worker the same file with --curve-key-file (or RINGWORK_CURVE_KEY_FILE).
    """
    from ringwork.node import CurveKeys

    write_private_file(output, CurveKeys.generate().dump(), replace=force)
    click.echo(f"wrote {output}")


def write_private_file(path: str, text: str, *, replace: bool) -> None:
    """Write ``text`` to a new mode-0600 file; the OS's refusal becomes a sentence to act on.

    An existing file is kept unless ``replace``: overwriting a cluster's key by accident would
    cut every worker still using the old one off from those using the new one.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    parent = os.path.dirname(path) or "."
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigurationError(
            f"{path} already exists: choose another file, or pass --force to replace it "
            "(workers still using the old key can no longer talk to the others)"
        ) from None
    except FileNotFoundError:
        raise ConfigurationError(
            f"cannot write {path}: directory {parent!r} does not exist (create it first)"
        ) from None
    except PermissionError:
        raise ConfigurationError(
            f"cannot write {path}: permission denied (choose a directory you can write to)"
        ) from None
    except IsADirectoryError:
        raise ConfigurationError(f"cannot write {path}: it is a directory; name a file") from None
    except NotADirectoryError:
        raise ConfigurationError(
            f"cannot write {path}: a part of {parent!r} is a file, not a directory"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)


@cli.group()
def db() -> None:
    """Database schema migrations (Alembic)."""


def _db_url(app_spec: str | None, database_url: str | None) -> str:
    if app_spec:
        return load_app(app_spec, database_url).settings.database_url
    from ringwork.settings import Settings

    return Settings().with_environment().replace(database_url=database_url).database_url


@db.command("upgrade")
@click.argument("app_spec", metavar="[MODULE:APP]", required=False)
@database_option
def db_upgrade(app_spec: str | None, database_url: str | None) -> None:
    """Apply pending migrations."""
    from ringwork.store import migrate

    head = migrate.upgrade(_db_url(app_spec, database_url))
    click.echo(f"database at revision {head}")


@db.command("current")
@click.argument("app_spec", metavar="[MODULE:APP]", required=False)
@database_option
def db_current(app_spec: str | None, database_url: str | None) -> None:
    """Print the database's migration revision."""
    from ringwork.store import migrate

    rev = migrate.current(_db_url(app_spec, database_url))
    click.echo(rev or "none (empty database)")


@cli.command()
@click.option("--jobs", "job_count", type=click.IntRange(min=10), default=3000, show_default=True)
@click.option("--processes", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the temporary directory for inspection.")
def demo(job_count: int, processes: int, keep: bool) -> None:
    """A self-contained showcase on a temporary SQLite database."""
    from ringwork.demo import run_demo

    sys.exit(run_demo(job_count=job_count, processes=processes, keep=keep))


def main() -> None:
    cli(prog_name="ringwork")


if __name__ == "__main__":
    main()
