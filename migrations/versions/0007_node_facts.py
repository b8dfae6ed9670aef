"""Node registry: each node's concurrency and ringwork version, for the dashboard's nodes screen.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Written once, at registration (a touch does not rewrite them). NULL: a row written by a node of
a version that did not record them; the dashboard shows a dash.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (nullable, no default): no table rewrite on either database.
    op.add_column("ringwork_nodes", sa.Column("concurrency", sa.Integer(), nullable=True))
    op.add_column("ringwork_nodes", sa.Column("version", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ringwork_nodes") as batch:
        batch.drop_column("version")
        batch.drop_column("concurrency")
