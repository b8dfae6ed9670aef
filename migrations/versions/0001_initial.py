"""Initial schema: clusters, partitions, node registry, jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Written out by hand (not imported from ringwork.store.schema) so it stays frozen when the
schema module moves on; tests/migration checks the two agree at head.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def _partial_index(name: str, columns: list, where: str, unique: bool = False) -> None:
    op.create_index(
        name,
        "ringwork_jobs",
        columns,
        unique=unique,
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def upgrade() -> None:
    op.create_table(
        "ringwork_clusters",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("partitions", sa.Integer, nullable=False),
        sa.Column("term", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("leader", sa.String(200), nullable=True),
        sa.Column("node_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_ringwork_clusters"),
    )
    op.create_table(
        "ringwork_partitions",
        sa.Column("cluster", sa.String(200), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(
            ["cluster"],
            ["ringwork_clusters.name"],
            name="fk_ringwork_partitions_cluster_ringwork_clusters",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("cluster", "partition", name="pk_ringwork_partitions"),
    )
    op.create_table(
        "ringwork_nodes",
        sa.Column("cluster", sa.String(200), nullable=False),
        sa.Column("node_id", sa.String(200), nullable=False),
        sa.Column("endpoint", sa.String(500), nullable=False),
        sa.Column("pub_endpoint", sa.String(500), nullable=True),
        sa.Column("wake_endpoint", sa.String(500), nullable=True),
        sa.Column("registered_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster"],
            ["ringwork_clusters.name"],
            name="fk_ringwork_nodes_cluster_ringwork_clusters",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("cluster", "node_id", name="pk_ringwork_nodes"),
    )
    op.create_table(
        "ringwork_jobs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("cluster", sa.String(200), nullable=False),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("payload", sa.JSON, nullable=True),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("run_at", TS, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="5"),
        sa.Column("ordered", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("dedupe_key", sa.Text, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("claim_epoch", sa.BigInteger, nullable=True),
        sa.Column("enqueued_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'dead', 'cancelled')",
            name=op.f("ck_ringwork_jobs_state"),
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ringwork_jobs"),
        sqlite_autoincrement=True,
    )
    if op.get_bind().dialect.name == "postgresql":
        # A queue table turns over constantly: every claim and completion leaves a dead row
        # version and dead entries at the head of the claim index. Vacuum it after ~1% churn
        # instead of the default 20%, so claims do not wade through dead index entries.
        op.execute(
            "ALTER TABLE ringwork_jobs SET (autovacuum_vacuum_scale_factor = 0.01,"
            " autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.02,"
            " autovacuum_vacuum_cost_delay = 0)"
        )
    _partial_index(
        "ix_ringwork_jobs_claim",
        ["cluster", "partition", sa.text("priority DESC"), "id", "run_at"],
        "state = 'queued'",
    )
    _partial_index(
        "uq_ringwork_jobs_dedupe",
        ["cluster", "task", "dedupe_key"],
        "dedupe_key IS NOT NULL AND state IN ('queued', 'running')",
        unique=True,
    )
    _partial_index(
        "ix_ringwork_jobs_ordered",
        ["cluster", "task", "key", "id"],
        "ordered AND state IN ('queued', 'running')",
    )
    _partial_index(
        "uq_ringwork_jobs_ordered_running",
        ["cluster", "task", "key"],
        "ordered AND state = 'running'",
        unique=True,
    )
    _partial_index(
        "ix_ringwork_jobs_running",
        ["cluster", "partition", "claim_epoch"],
        "state = 'running'",
    )


def downgrade() -> None:
    op.drop_table("ringwork_jobs")
    op.drop_table("ringwork_nodes")
    op.drop_table("ringwork_partitions")
    op.drop_table("ringwork_clusters")
