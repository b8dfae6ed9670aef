"""Jobs: a stored result; and ``ringwork_attempts``, one row per attempt.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

``ringwork_jobs.result`` holds a ``store_result=True`` task's return value (JSON text; NULL for
every existing row: no result was kept). ``ringwork_attempts`` records each attempt that
changed its job -- node, epoch, start, end, outcome, error -- written by the statement that
ends the attempt. Jobs that ran before this revision have no attempt rows: their history starts
with their next attempt. Adding a nullable column rewrites nothing on PostgreSQL; SQLite's
batch mode copies the table, keeping every row. Types written out by hand, as in 0001, so the
file stays frozen when the schema moves on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("ringwork_jobs", sa.Column("result", sa.Text, nullable=True))
    op.create_table(
        "ringwork_attempts",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.BigInteger, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ringwork_attempts"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ringwork_attempts_job_id", "ringwork_attempts", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_ringwork_attempts_job_id", table_name="ringwork_attempts")
    op.drop_table("ringwork_attempts")
    with op.batch_alter_table("ringwork_jobs") as batch:
        batch.drop_column("result")
