"""Jobs: record a cancel requested for a running job.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

A running job cannot be stopped by the statement that cancels it: the statement records the
request (``cancel_requested_at``), the job's worker notices it and ends the attempt
``cancelled`` under its claim token. NULL (every existing row) means no cancel was requested.
Types written out by hand, as in 0001, so the file stays frozen when the schema moves on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ringwork_jobs") as batch:
        batch.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ringwork_jobs") as batch:
        batch.drop_column("cancel_requested_at")
