"""Jobs: an index over finished jobs by state and age, for retention's prune.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

The leader deletes finished jobs older than their state's retention, oldest first, in batches.
Without this index each batch would read the whole table (mostly finished jobs) to find its
rows; with it a batch is a short range scan. Partial: queued and running jobs, which the claim
path writes, are not in it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FINISHED = sa.text("state IN ('succeeded', 'cancelled', 'dead')")


def upgrade() -> None:
    op.create_index(
        "ix_ringwork_jobs_finished",
        "ringwork_jobs",
        ["cluster", "state", "finished_at"],
        postgresql_where=_FINISHED,
        sqlite_where=_FINISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_ringwork_jobs_finished", table_name="ringwork_jobs")
