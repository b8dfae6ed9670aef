"""The periodic tasks' reads: the database's time, and the newest tick each schedule enqueued.

No table of its own (no migration): a tick's job is an ordinary row whose dedupe key names the
tick (:mod:`ringwork.periodic`), so "the last tick enqueued" is the greatest such key of the
task -- the rows are the record, kept as long as retention keeps finished jobs.

Threads: inside a transaction of :class:`~ringwork.store.Store`, on the caller's thread (the
leader's ``ringwork-housekeeping``, the CLI's main thread).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ringwork.store.clock import now_expr
from ringwork.store.schema import jobs


def database_now(conn: sa.Connection, dialect: str) -> datetime:
    """The database's current time (PostgreSQL: of this read, not of the transaction)."""
    expr = (sa.func.clock_timestamp() if dialect == "postgresql" else now_expr(dialect))
    value = conn.execute(sa.select(sa.type_coerce(expr, jobs.c.enqueued_at.type))).scalar_one()
    assert isinstance(value, datetime)
    return value


def _like(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def newest(
    conn: sa.Connection, cluster: str, prefixes: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """For each ``task -> dedupe-key prefix``: its job with the greatest such key (id, state,
    dedupe_key), when there is one -- the newest tick, as the keys sort like time.

    Cost: no index covers finished rows by task, so on a large table this is a scan of the
    cluster's rows (PostgreSQL: ~13 ms per 100,000 rows here), once per tick of a schedule. A
    partial index on ``(cluster, task, dedupe_key) WHERE dedupe_key LIKE 'cron:%'`` would make
    it a probe; it is a migration, left for when per-second schedules meet million-row tables.
    """
    return _greatest_keys(conn, cluster, prefixes)


def max_id(conn: sa.Connection) -> int:
    """The greatest job id (the primary key's end: one probe)."""
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(jobs.c.id), 0))).scalar_one())


def newer(
    conn: sa.Connection, cluster: str, prefixes: Mapping[str, str], after_id: int
) -> dict[str, dict[str, Any]]:
    """:func:`newest` among the jobs inserted after ``after_id`` only: a range of the primary
    key, cheap however large the table."""
    return _greatest_keys(conn, cluster, prefixes, jobs.c.id > after_id)


def _greatest_keys(conn: sa.Connection, cluster: str, prefixes: Mapping[str, str],
                   *more: sa.ColumnElement[bool]) -> dict[str, dict[str, Any]]:
    """Per task, its job with the greatest dedupe key of its prefix, among rows matching
    ``more`` too."""
    found: dict[str, dict[str, Any]] = {}
    for task, prefix in prefixes.items():
        row = conn.execute(
            sa.select(jobs.c.id, jobs.c.state, jobs.c.dedupe_key)
            .where(*more, jobs.c.cluster == cluster, jobs.c.task == task,
                   jobs.c.dedupe_key.like(_like(prefix), escape="\\"))
            .order_by(jobs.c.dedupe_key.desc())
            .limit(1)
        ).mappings().first()
        if row is not None:
            found[task] = dict(row)
    return found


def merged(
    old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per task, whichever of the two has the greater (later) dedupe key."""
    out = dict(old)
    for task, row in new.items():
        if task not in out or row["dedupe_key"] > out[task]["dedupe_key"]:
            out[task] = row
    return out


def lock_rounds(conn: sa.Connection, cluster: str) -> None:
    """PostgreSQL: serialize the cluster's cron rounds (two leaders at once) until commit.

    A transaction-level advisory lock: it blocks nothing but another cron round, so the claim
    path never waits for it, and it ends with the transaction (also when the session dies).
    """
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                 {"name": f"ringwork-cron:{cluster}"})
