"""Jobs: the W3C ``traceparent`` of the enqueue, so a job's run joins its enqueuer's trace.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Written at enqueue when OpenTelemetry is configured in the enqueuing process (``ringwork[otel]``,
docs/tracing.md), read by the claim, ``NULL`` otherwise -- and for every job already there, so
the upgrade rewrites no row (a nullable column without a default is a catalog change on both
databases). 55 characters: version, trace id, span id and flags of the W3C header.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN, not a batch (see 0005: a SQLite batch would rebuild the table).
    op.add_column("ringwork_jobs", sa.Column("traceparent", sa.String(55), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ringwork_jobs") as batch:
        batch.drop_column("traceparent")
