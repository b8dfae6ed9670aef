"""``ringwork db upgrade|current``: the schema's Alembic migrations.

Runs on the main thread of a ``ringwork`` process.
"""

from __future__ import annotations

import click

from ringwork.cli.options import APP_VARIABLE, database_option, load_app


@click.group()
def db() -> None:
    """Database schema migrations (Alembic)."""


def _db_url(app_spec: str | None, database_url: str | None) -> str:
    if app_spec:
        return load_app(app_spec, database_url).settings.database_url
    from ringwork.settings import Settings

    return Settings().with_environment().replace(database_url=database_url).database_url


@db.command("upgrade")
@click.argument("app_spec", metavar="[MODULE:APP]", required=False, envvar=APP_VARIABLE)
@database_option
def db_upgrade(app_spec: str | None, database_url: str | None) -> None:
    """Apply pending migrations."""
    from ringwork.store import migrate

    head = migrate.upgrade(_db_url(app_spec, database_url))
    click.echo(f"database at revision {head}")


@db.command("current")
@click.argument("app_spec", metavar="[MODULE:APP]", required=False, envvar=APP_VARIABLE)
@database_option
def db_current(app_spec: str | None, database_url: str | None) -> None:
    """Print the database's migration revision."""
    from ringwork.store import migrate

    rev = migrate.current(_db_url(app_spec, database_url))
    click.echo(rev or "none (empty database)")
