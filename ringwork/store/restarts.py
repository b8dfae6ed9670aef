"""A named node's restart: the jobs its previous incarnation left ``running`` go back to the queue.

Static membership (``--node-name``) keeps a node's id across restarts, so a job its previous
process was running when it died (``kill -9``, an abandoned grace) still reads ``claimed_by =
NAME`` -- the very id the new process claims under. Nothing else would notice: the new process
never claimed it, so it is in no ledger, and the partition comes back to the same owner, so the
job is not "lost to another worker" either. The new incarnation calls this once, when it
registers, before it has joined (so before it can claim anything itself): every job still
running under its name is an old incarnation's.

Apart from :mod:`.referee`'s re-queue on reassignment on purpose: that one decides by epoch
which claims a move ends; this one by name, once per process start. The attempt was counted
when the job was claimed, so one with no attempt left ends ``dead``, and one whose cancel was
requested ends ``cancelled``, as a lost job does (the same rule: :func:`.jobs.back_to_queue`).

Threads: runs inside a write transaction of :class:`~ringwork.store.Store`, on whichever thread
starts the node (the worker's database pool, or the node child's main thread).
"""

from __future__ import annotations

import sqlalchemy as sa

from ringwork.store.jobs import back_to_queue, record_attempts
from ringwork.store.schema import RUNNING, jobs


def restarted_error(node_id: str) -> str:
    """The ``last_error`` of a job its worker's restart interrupted."""
    return f"worker {node_id} restarted while running the job (its previous process ended)"


def requeue_restarted(conn: sa.Connection, dialect: str, cluster: str, node_id: str) -> int:
    """Re-queue every job still ``running`` under ``node_id``; how many there were."""
    c = jobs.c
    error = restarted_error(node_id)
    rows = list(conn.execute(
        sa.update(jobs)
        .where(c.cluster == cluster, c.state == RUNNING, c.claimed_by == node_id)
        .values(back_to_queue(dialect, error))
        .returning(c.id, c.attempts, c.claim_epoch)
    ))
    # The interrupted attempts are history too (``ringwork jobs show``): ended ``lost``.
    record_attempts(conn, dialect, [
        {"job_id": r.id, "attempt": r.attempts, "node": node_id, "epoch": r.claim_epoch,
         "outcome": "lost", "error": error} for r in rows])
    return len(rows)
