"""Node registry: record whether each node is a joined member.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

A node that registered but cannot reach its peers (a wrong CURVE key, a firewall) looked like a
healthy follower in ``ringwork status``; the column lets status mark it ``not joined``. NULL
(rows of nodes that predate it) is shown as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ringwork_nodes") as batch:
        batch.add_column(sa.Column("joined", sa.Boolean, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ringwork_nodes") as batch:
        batch.drop_column("joined")
