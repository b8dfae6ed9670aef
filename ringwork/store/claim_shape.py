"""What every claim statement shares, on both databases: the columns it returns and the rule
that says which queued job of an ordered key may run.

Kept apart so the PostgreSQL and SQLite statements (:mod:`.claim_pg`, :mod:`.claim_sqlite`)
cannot drift: the same columns reach :func:`.claim.claimed_jobs`, and the same predicate --
word for word the partial index's -- guards strict order on both.

Threads: none of its own; constants, read by the statements' modules at import.
"""

from __future__ import annotations

import sqlalchemy as sa

#: What a claim returns, by name: :func:`claimed_jobs` reads exactly these keys.
CLAIM_COLUMNS = {
    "id": sa.BigInteger,
    "task": sa.String,
    "key": sa.String,
    "partition": sa.Integer,
    "payload": sa.JSON,
    "attempts": sa.Integer,
    "max_attempts": sa.Integer,
    "claim_epoch": sa.BigInteger,
    "priority": sa.Integer,
    "traceparent": sa.String,
    "waited": sa.Float,
}

# A job whose predecessor of the same ordered key is unfinished is not runnable (strict FIFO).
# A dead job of a ``block_key_on_dead`` task counts as unfinished. The predicate is
# ``ix_ringwork_jobs_ordered``'s, word for word (schema.py): so both planners use that index.
ORDERED_HEAD = """(NOT {j}.ordered OR NOT EXISTS (
              SELECT 1 FROM ringwork_jobs AS e
              WHERE e.cluster = {j}.cluster AND e.task = {j}.task AND e."key" = {j}."key"
                AND e.id < {j}.id AND e.ordered
                AND (e.state IN ('queued', 'running')
                     OR (e.state = 'dead' AND e.block_key_on_dead))))"""
