"""Alembic environment for ringwork.

ringwork builds the Alembic ``Config`` in code (:mod:`ringwork.store.migrate`) and hands over a
connection that is already inside a locked transaction, so two processes upgrading at once run
one after the other. There is no ``alembic.ini``; for ad-hoc use of the ``alembic`` command, set
``sqlalchemy.url`` on the config (``-x`` is not read).
"""

from __future__ import annotations

from alembic import context

from ringwork.store.schema import VERSION_TABLE, metadata

config = context.config


def run_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        # Plain `alembic` use: no lock of ours; ringwork's own entry points always pass one.
        from ringwork.store.engine import create_engine

        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.connect() as conn:
            context.configure(
                connection=conn, target_metadata=metadata, version_table=VERSION_TABLE
            )
            with context.begin_transaction():
                context.run_migrations()
        engine.dispose()
        return
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        transactional_ddl=True,
    )
    # The caller's transaction is already open, so this does not commit: the caller does.
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
