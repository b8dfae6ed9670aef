"""What the upgrade tests share: a database left at an old revision with a cluster of its own,
and every job row read back whole, to compare before and after an upgrade."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command

from ringwork.store.engine import create_engine
from ringwork.store.migrate import _config

#: The time every old row was written at (text both databases take for a timestamp).
THEN = "2026-11-30 12:00:00.000000"


def at_revision(engine: sa.Engine, revision: str, cluster: str, partitions: int) -> None:
    """Migrate the empty database to ``revision`` and write a cluster whose partitions all
    belong to ``n1`` at epoch 1, as a release of that revision would have."""
    with engine.begin() as conn:
        command.upgrade(_config(conn), revision)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO ringwork_clusters (name, partitions, term, leader, node_seq,"
            " created_at) VALUES (:c, :n, 1, 'n1', 0, :now)"),
            {"c": cluster, "n": partitions, "now": THEN})
        for p in range(partitions):
            conn.execute(sa.text(
                "INSERT INTO ringwork_partitions (cluster, \"partition\", owner, epoch)"
                " VALUES (:c, :p, 'n1', 1)"), {"c": cluster, "p": p})


def move_id_sequence(conn: sa.Connection) -> None:
    """Ids were given by hand: on PostgreSQL, move the sequence past them."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('ringwork_jobs', 'id'), 100)"))


def job_rows(url: str) -> list[dict[str, Any]]:
    """Every job row, every column, by id."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                sa.text("SELECT * FROM ringwork_jobs ORDER BY id"))]
    finally:
        engine.dispose()
