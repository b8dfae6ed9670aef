"""Schema migrations (Alembic), callable from the CLI and from :meth:`Store.open`.

The Alembic environment ships inside the wheel as the package ``ringwork.migrations`` (the
checkout's top-level ``migrations/``), so it is found with :mod:`importlib.resources`; no
``alembic.ini`` is read.

Two processes starting at once must not both create the tables. The upgrade therefore runs in
one transaction that first takes a lock: ``pg_advisory_xact_lock`` on PostgreSQL (DDL is
transactional there), ``BEGIN IMMEDIATE`` -- the database write lock -- on SQLite. The second
process waits, then finds the schema at head and does nothing.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from ringwork.errors import SchemaError
from ringwork.store.engine import SQLITE_IMMEDIATE, create_engine, translated
from ringwork.store.schema import HEAD_REVISION, VERSION_TABLE

if TYPE_CHECKING:
    from alembic.config import Config

#: pg_advisory_xact_lock key for migrations: the bytes of "ringwork" as a signed bigint.
MIGRATION_LOCK_KEY = int.from_bytes(b"ringwork", "big", signed=True)


def migrations_dir() -> Path:
    """Where the Alembic environment lives: the installed package, else the checkout."""
    try:
        return Path(str(resources.files("ringwork.migrations")))
    except ModuleNotFoundError:
        # Running from a checkout that is not pip-installed: migrations/ sits next to ringwork/.
        return Path(__file__).resolve().parents[2] / "migrations"


def _config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


@functools.lru_cache(maxsize=1)
def head() -> str:
    """The newest revision in the migration scripts (Alembic's view)."""
    from alembic.script import ScriptDirectory

    rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert rev is not None, "no migrations found"
    return rev


def _current(conn: sa.Connection) -> str | None:
    """The database's revision, read without Alembic (``None``: no version table yet)."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade_engine(engine: Engine) -> str:
    """Bring the schema to head under the migration lock; cheap when already there."""
    with engine.connect() as conn:
        if _current(conn) == HEAD_REVISION:
            conn.rollback()
            return HEAD_REVISION
        conn.rollback()
        from alembic import command

        conn = conn.execution_options(**{SQLITE_IMMEDIATE: True})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            command.upgrade(_config(conn), "head")
    return head()


def check_engine(engine: Engine) -> None:
    """Raise :class:`SchemaError` unless the schema is exactly at head (``migrate=False``)."""
    with engine.connect() as conn:
        rev = _current(conn)
    if rev != HEAD_REVISION:
        have = "empty" if rev is None else f"at revision {rev}"
        raise SchemaError(
            f"database schema is {have}, this ringwork needs {HEAD_REVISION}; "
            "run `ringwork db upgrade` (or start without --no-migrate)"
        )


def upgrade(url: str | URL) -> str:
    """Apply pending migrations to the database at ``url``; returns the head revision."""
    engine = create_engine(url)
    try:
        with translated("database upgrade"):
            return upgrade_engine(engine)
    finally:
        engine.dispose()


def current(url: str | URL) -> str | None:
    """The revision the database at ``url`` is at (``None`` for an empty database)."""
    engine = create_engine(url)
    try:
        with translated("reading schema revision"), engine.connect() as conn:
            return _current(conn)
    finally:
        engine.dispose()
