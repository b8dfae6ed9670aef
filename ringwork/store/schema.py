"""The tables, as SQLAlchemy Core metadata: the single source of truth the migrations must match.

``tests/migration`` checks that upgrading an empty database to the Alembic head yields exactly
this metadata, so a change here always comes with a new file in ``migrations/versions``.

Every table is prefixed ``ringwork_`` because ringwork usually shares a database with the
application it serves.

Index notes (the why; ``docs/store.md`` shows the plans):

* ``ix_ringwork_jobs_claim`` is partial on ``state = 'queued'`` and ordered exactly like the
  claim (``priority DESC, id``) inside one partition, so a claim is one short index range scan per
  owned partition, and finished jobs -- the bulk of an old table -- are not in it at all.
  ``run_at`` is a trailing key column so jobs waiting to retry are skipped inside the index.
* ``ix_ringwork_jobs_finished`` (finished states only, by ``finished_at`` within a state) lets
  retention's prune find its oldest batch with a short range scan instead of reading a table
  that is mostly finished jobs; ``status`` counts each finished state up to its cap inside it
  too. The claim and its indexes never see these rows.
* Partial-index predicates use literals, and every query that must use them repeats the literal
  (never a bound parameter): SQLite, and PostgreSQL's generic plans for prepared statements, can
  only prove a partial index applicable from a literal.
* ``jobs.cluster`` has no foreign key on purpose: PostgreSQL checks a foreign key with a per-row
  trigger, which would cost every enqueued job a lookup and a lock on the cluster row.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect

#: The job states (contract), in lifecycle order.
JOB_STATES = ("queued", "running", "succeeded", "dead", "cancelled")

#: Name of Alembic's bookkeeping table (ours, so it cannot collide with the application's).
VERSION_TABLE = "ringwork_alembic_version"
#: The newest migration in ``migrations/versions``. Workers compare the database against it
#: without importing Alembic (~10 MB and tens of ms per process); Alembic runs only when an
#: upgrade is due. tests/migration checks it equals Alembic's own head.
HEAD_REVISION = "0008"

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is always an aware UTC ``datetime`` in Python.

    PostgreSQL stores ``timestamptz``. SQLite has no timestamp type; SQLAlchemy stores text in a
    fixed, lexically sortable format, so we store naive UTC there and compare it as text.
    A naive datetime handed in is taken to be UTC already.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, str):  # a raw SQLite value that bypassed the DATETIME type
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# SQLite only autoincrements an INTEGER PRIMARY KEY (its rowid); PostgreSQL gets BIGSERIAL.
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

clusters = sa.Table(
    "ringwork_clusters",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("partitions", sa.Integer, nullable=False),
    # The leader term: changed only by compare-and-set (see referee.py).
    sa.Column("term", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("leader", sa.String(200), nullable=True),
    # Last registered_seq handed out; bumping it serialises registrations so seq = commit order.
    sa.Column("node_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

partitions = sa.Table(
    "ringwork_partitions",
    metadata,
    sa.Column(
        "cluster",
        sa.String(200),
        sa.ForeignKey("ringwork_clusters.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("owner", sa.String(200), nullable=True),
    # Bumped by one on every (re)assignment; a claim is stamped with it (the fencing token).
    sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"),
)

nodes = sa.Table(
    "ringwork_nodes",
    metadata,
    sa.Column(
        "cluster",
        sa.String(200),
        sa.ForeignKey("ringwork_clusters.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("node_id", sa.String(200), primary_key=True),
    sa.Column("endpoint", sa.String(500), nullable=False),
    sa.Column("pub_endpoint", sa.String(500), nullable=True),
    sa.Column("wake_endpoint", sa.String(500), nullable=True),
    sa.Column("registered_seq", sa.BigInteger, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    # Whether the node is a member (a leader, or a follower whose join the leader acknowledged),
    # as of its last registry write: status shows the ones stuck outside as "not joined".
    # NULL: written by a version that did not record it.
    sa.Column("joined", sa.Boolean, nullable=True),
    # What the node told at registration, for the dashboard: its job slots and its ringwork
    # version. NULL: written by a version that did not record them.
    sa.Column("concurrency", sa.Integer, nullable=True),
    sa.Column("version", sa.String(40), nullable=True),
)

jobs = sa.Table(
    "ringwork_jobs",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("cluster", sa.String(200), nullable=False),
    sa.Column("task", sa.String(200), nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("payload", sa.JSON, nullable=True),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("state", sa.String(16), nullable=False, server_default="queued"),
    sa.Column("run_at", UTCDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False, server_default="5"),
    sa.Column("ordered", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("dedupe_key", sa.Text, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    # The fence: who claimed the job and at which partition epoch (the claim token).
    sa.Column("claimed_by", sa.String(200), nullable=True),
    sa.Column("claim_epoch", sa.BigInteger, nullable=True),
    sa.Column("enqueued_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    # Set by a cancel of a running job; its worker ends the attempt ``cancelled`` (worker/cancels).
    sa.Column("cancel_requested_at", UTCDateTime, nullable=True),
    # Its task's ``block_key_on_dead`` (ordered jobs only): dead, it still holds its key.
    sa.Column("block_key_on_dead", sa.Boolean, nullable=False, server_default=sa.false()),
    # A ``store_result=True`` task's return value, as JSON text written by its completion
    # (``NULL``: no result kept). Text, not a JSON type: it is written as the worker encoded
    # it, never parsed by the database, and read back with ``json.loads``.
    sa.Column("result", sa.Text, nullable=True),
    # The W3C trace context of the enqueue (``NULL``: not traced); the claim hands it to the
    # attempt's span (ringwork/tracing.py).
    sa.Column("traceparent", sa.String(55), nullable=True),
    sa.CheckConstraint(
        "state IN ('queued', 'running', 'succeeded', 'dead', 'cancelled')", name="state"
    ),
    sqlite_autoincrement=True,  # ids are never reused: FIFO order and fencing rely on that
)

#: The ways an attempt ends (``ringwork_attempts.outcome``).
ATTEMPT_OUTCOMES = ("succeeded", "failed", "cancelled", "abandoned", "lost")

# One row per attempt that changed its job, written whole by the statement that ends it (in the
# same transaction): the claim writes nothing here, so a claim costs what it did.
attempts = sa.Table(
    "ringwork_attempts",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    # No foreign key (see jobs.cluster): retention deletes a job's attempts in its own batch.
    sa.Column("job_id", sa.BigInteger, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("node", sa.String(200), nullable=True),
    sa.Column("epoch", sa.BigInteger, nullable=True),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sqlite_autoincrement=True,
)
# A job's history, in order; and retention's delete of a batch of jobs' attempts.
sa.Index("ix_ringwork_attempts_job_id", attempts.c.job_id, attempts.c.id)


def dialect_insert(dialect: str, table: sa.Table) -> Any:
    """The dialect's own INSERT for ``table``, the one with ``on_conflict_do_*`` (an upsert)."""
    return (pg.insert if dialect == "postgresql" else sqlite.insert)(table)


#: The states a job never leaves by itself: what retention prunes.
FINISHED_STATES = ("succeeded", "cancelled", "dead")

#: The states a query must compare as literals, not parameters, for the partial indexes to apply.
QUEUED: sa.ColumnClause[Any] = sa.literal_column("'queued'")
RUNNING: sa.ColumnClause[Any] = sa.literal_column("'running'")

_QUEUED = sa.text("state = 'queued'")
_UNFINISHED_DEDUPE = sa.text("dedupe_key IS NOT NULL AND state IN ('queued', 'running')")
#: What holds an ordered key: an unfinished job, or a dead one of a ``block_key_on_dead`` task.
#: The claim's head check repeats it word for word (claim_shape.py), so the planners use the index.
HOLDS_KEY = ("ordered AND (state IN ('queued', 'running') "
             "OR (state = 'dead' AND block_key_on_dead))")
_UNFINISHED_ORDERED = sa.text(HOLDS_KEY)
_RUNNING_ORDERED = sa.text("ordered AND state = 'running'")
_RUNNING = sa.text("state = 'running'")
_BLOCKING = sa.text("state = 'dead' AND block_key_on_dead")
_FINISHED = sa.text("state IN ('succeeded', 'cancelled', 'dead')")


def _partial(name: str, *cols: Any, where: sa.TextClause, unique: bool = False) -> sa.Index:
    return sa.Index(name, *cols, unique=unique, postgresql_where=where, sqlite_where=where)


# The claim: per partition, queued jobs in claim order.
_partial(
    "ix_ringwork_jobs_claim",
    jobs.c.cluster,
    jobs.c.partition,
    jobs.c.priority.desc(),
    jobs.c.id,
    jobs.c.run_at,
    where=_QUEUED,
)
# Dedupe: one unfinished job per (task, dedupe_key); the ON CONFLICT target of enqueue.
_partial(
    "uq_ringwork_jobs_dedupe",
    jobs.c.cluster,
    jobs.c.task,
    jobs.c.dedupe_key,
    where=_UNFINISHED_DEDUPE,
    unique=True,
)
# Ordered keys: "is an earlier job of this key unfinished (or dead and blocking)?" is a probe
# into this index. Dead jobs of tasks without ``block_key_on_dead`` are not in it.
_partial(
    "ix_ringwork_jobs_ordered",
    jobs.c.cluster,
    jobs.c.task,
    jobs.c.key,
    jobs.c.id,
    where=_UNFINISHED_ORDERED,
)
# Safety net under ownership: at most one running job per ordered key, ever.
_partial(
    "uq_ringwork_jobs_ordered_running",
    jobs.c.cluster,
    jobs.c.task,
    jobs.c.key,
    where=_RUNNING_ORDERED,
    unique=True,
)
# ``status``: the keys a dead job blocks (``block_key_on_dead``), without reading other dead jobs.
_partial(
    "ix_ringwork_jobs_blocking",
    jobs.c.cluster,
    jobs.c.task,
    jobs.c.key,
    where=_BLOCKING,
)
# Reassignment re-queues the running jobs of the moved partitions.
_partial(
    "ix_ringwork_jobs_running",
    jobs.c.cluster,
    jobs.c.partition,
    jobs.c.claim_epoch,
    where=_RUNNING,
)
# Retention: the oldest finished jobs of a state, without reading the rest of the table.
_partial(
    "ix_ringwork_jobs_finished",
    jobs.c.cluster,
    jobs.c.state,
    jobs.c.finished_at,
    where=_FINISHED,
)
