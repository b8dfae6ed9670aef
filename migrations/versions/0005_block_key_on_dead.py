"""Jobs: a dead job of a ``block_key_on_dead`` task keeps its ordered key blocked.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

The flag is copied from the task onto each job at enqueue, like ``ordered``, so that every way a
job can end ``dead`` -- its handler's last failure, a lost worker's last attempt -- leaves the
key blocked, whichever process wrote it. Existing rows get ``false``: their keys behave as
before. The ordered-key index is rebuilt with the new predicate (dead blocking jobs are in it,
so the claim's head check stays one probe); it holds only unfinished ordered jobs, so the rebuild
reads the table once and writes a small index; ``ix_ringwork_jobs_blocking`` holds the
dead blockers alone, so that ``status`` can name the blocked keys cheaply. Types written out by hand, as in 0001, so the
file stays frozen when the schema moves on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = sa.text("ordered AND state IN ('queued', 'running')")
_NEW = sa.text("ordered AND (state IN ('queued', 'running') "
               "OR (state = 'dead' AND block_key_on_dead))")
_COLUMNS = ["cluster", "task", "key", "id"]
_BLOCKING = sa.text("state = 'dead' AND block_key_on_dead")


def upgrade() -> None:
    # A plain ALTER TABLE .. ADD COLUMN, not a batch: on SQLite a batch with this (expression)
    # default would copy the table into a new one, and the copy's indexes are rebuilt from
    # reflection, which loses ``priority DESC`` in the claim index. Existing rows read false.
    op.add_column("ringwork_jobs", sa.Column("block_key_on_dead", sa.Boolean(), nullable=False,
                                             server_default=sa.false()))
    op.drop_index("ix_ringwork_jobs_ordered", table_name="ringwork_jobs")
    op.create_index("ix_ringwork_jobs_ordered", "ringwork_jobs", _COLUMNS,
                    postgresql_where=_NEW, sqlite_where=_NEW)
    # For ``status``: the dead jobs that block their key, and nothing else (empty at first).
    op.create_index("ix_ringwork_jobs_blocking", "ringwork_jobs", ["cluster", "task", "key"],
                    postgresql_where=_BLOCKING, sqlite_where=_BLOCKING)


def downgrade() -> None:
    op.drop_index("ix_ringwork_jobs_blocking", table_name="ringwork_jobs")
    op.drop_index("ix_ringwork_jobs_ordered", table_name="ringwork_jobs")
    op.create_index("ix_ringwork_jobs_ordered", "ringwork_jobs", _COLUMNS,
                    postgresql_where=_OLD, sqlite_where=_OLD)
    with op.batch_alter_table("ringwork_jobs") as batch:
        batch.drop_column("block_key_on_dead")
