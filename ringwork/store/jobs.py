"""The rest of a job's life after its claim: failure, hand-back, re-queue, cancel and retry.

These are built with SQLAlchemy Core in place: none is on the per-job hot path (a failure is
one statement per failed attempt), so clarity wins over a hand-written statement. The fence of
a failure is the completion's -- ``claimed_by`` and ``claim_epoch`` checked on the job row --
and every timestamp is the database's own clock inside the statement (:mod:`.clock`). States are
compared as literals (``schema.QUEUED``...) so the partial indexes apply.

Threads: each function runs inside a transaction of :class:`~ringwork.store.Store` on the
caller's thread. :func:`fail`, :func:`abandon` and :func:`release_unknown` come from the worker's
database pool (``ringwork-db``) or the node child's ``ringwork-store`` thread; cancel, retry and
come from application threads and the CLI. The reads are :mod:`.reads`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ringwork.errors import InvalidJobState, JobNotFound
from ringwork.job import Outcome
from ringwork.store.clock import now_expr
from ringwork.store.schema import QUEUED, RUNNING, attempts, jobs

#: last_error is capped so a huge traceback cannot bloat the row.
MAX_ERROR_CHARS = 8000


def release_unknown(
    conn: sa.Connection, dialect: str, cluster: str, node_id: str, known: Sequence[int]
) -> list[int]:
    """Re-queue jobs claimed by ``node_id`` that it does not know it holds; their ids.

    After a commit whose reply was lost (connection cut between COMMIT and its answer) the
    claimed jobs are ``running`` in the database but in no worker's memory, and no claim would
    ever pick them again until their partition moved. They never started, so the claim's
    attempt is given back (one whose cancel was requested meanwhile ends ``cancelled``).
    """
    c = jobs.c
    stmt = (
        sa.update(jobs)
        .where(c.cluster == cluster, c.claimed_by == node_id, c.state == "running")
        .values(state=sa.case((_cancel_asked(), "cancelled"), else_="queued"),
                finished_at=sa.case((_cancel_asked(), now_expr(dialect)), else_=None),
                claimed_by=None, claim_epoch=None, started_at=None, attempts=c.attempts - 1)
        .returning(c.id)
    )
    if known:
        stmt = stmt.where(c.id.not_in(list(known)))
    return [int(i) for i in conn.execute(stmt).scalars()]


def fail(
    conn: sa.Connection,
    dialect: str,
    cluster: str,
    node_id: str,
    job_id: int,
    token: int,
    error: str,
    retry_delay: float | None,
    cancelled: bool = False,
) -> Outcome:
    """Record an attempt that did not succeed: back to queued after ``retry_delay``, or dead
    (``retry_delay`` None), or ``cancelled``; fenced if stale.

    A job whose cancel was requested is never retried, whatever the attempt's end: it goes
    ``cancelled`` (its worker may not have noticed the request before the handler failed).
    """
    c = jobs.c
    if retry_delay is None or cancelled:
        retry: sa.ColumnElement[bool] = sa.false()
    else:
        retry = sa.and_(c.attempts < c.max_attempts, c.cancel_requested_at.is_(None))
    end = sa.literal("cancelled") if cancelled else sa.case(
        (_cancel_asked(), "cancelled"), else_="dead")
    now = now_expr(dialect)
    stmt = (
        sa.update(jobs)
        .where(
            c.id == job_id,
            c.cluster == cluster,
            c.state == RUNNING,
            c.claimed_by == node_id,
            c.claim_epoch == token,
        )
        .values(
            last_error=error[:MAX_ERROR_CHARS],
            state=sa.case((retry, "queued"), else_=end),
            run_at=sa.case((retry, now_expr(dialect, retry_delay or 0.0)), else_=c.run_at),
            finished_at=sa.case((retry, None), else_=now),
            claimed_by=sa.case((retry, None), else_=c.claimed_by),
        )
        .returning(c.state, c.attempts, c.started_at)
    )
    row = conn.execute(stmt).first()
    if row is None:
        return Outcome.FENCED
    ended = "cancelled" if cancelled or row.state == "cancelled" else "failed"
    record_attempts(conn, dialect, [{"job_id": job_id, "attempt": row.attempts,
                                     "node": node_id, "epoch": token,
                                     "started_at": row.started_at, "outcome": ended,
                                     "error": error[:MAX_ERROR_CHARS]}])
    return {"queued": Outcome.RETRY, "cancelled": Outcome.CANCELLED}.get(row.state, Outcome.DEAD)


def record_attempts(conn: sa.Connection, dialect: str, rows: Sequence[dict[str, Any]]) -> None:
    """One multi-row INSERT of attempt rows (``job_id``, ``attempt``, ``node``, ``epoch``,
    ``started_at``, ``outcome``, ``error``), ended now by the database's clock: for the paths
    that end attempts by ``UPDATE .. RETURNING`` (failures, hand-backs, re-queues), in the
    transaction of that update. (Completions write theirs in their own statement, claim.py.)"""
    if rows:
        # started_at from the job row in the statement (the update that ended the attempt left
        # it as the claim wrote it), not bound back from RETURNING: the database's times are
        # never sent by the process, not even its own (tests/integration/test_store_clock.py).
        started = (sa.select(jobs.c.started_at).where(jobs.c.id == sa.bindparam("jid"))
                   .scalar_subquery())
        stmt = sa.insert(attempts).values(finished_at=now_expr(dialect), started_at=started)
        conn.execute(stmt, [{"error": None, **{k: v for k, v in r.items() if k != "started_at"},
                             "jid": r["job_id"]} for r in rows])


#: The error a job gets when its worker stopped before it finished (see :func:`abandon`).
ABANDONED = "abandoned at shutdown after the grace period (worker {node})"
#: ... and when the worker process died under its node (the node hands its jobs back).
WORKER_GONE = "worker {node} was lost while running the job (its process died)"


def back_to_queue(
    dialect: str, error: str | sa.ColumnElement[str], *, keep_error: bool = False
) -> dict[str, Any]:
    """The values that end a running attempt with no outcome: back to the queue at once, or
    ``dead`` if that was its last attempt (the attempt was counted at the claim), or
    ``cancelled`` if a cancel was asked. ``keep_error``: write ``error`` only on a dead job
    (the re-queue of a lost worker's jobs keeps the handler's last error otherwise)."""
    c = jobs.c
    exhausted = c.attempts >= c.max_attempts
    now = now_expr(dialect)
    text = sa.literal(error[:MAX_ERROR_CHARS]) if isinstance(error, str) else error
    return {
        "state": sa.case((_cancel_asked(), "cancelled"), (exhausted, "dead"), else_="queued"),
        "last_error": sa.case((exhausted, text), else_=c.last_error) if keep_error else text,
        "finished_at": sa.case((_cancel_asked(), now), (exhausted, now), else_=None),
        "run_at": sa.case((exhausted, c.run_at), else_=now),
        "claimed_by": sa.case((exhausted, c.claimed_by), else_=None),
    }


def abandon(
    conn: sa.Connection, dialect: str, cluster: str, node_id: str,
    claims: Sequence[tuple[int, int]] | None, error: str = ABANDONED,
) -> list[int]:
    """A worker hands back jobs it started and will not finish (``claims``: ``(id, token)``
    pairs, fenced like a completion; ``None``: every job running under ``node_id``); the ids.

    Why the worker does it itself: its jobs keep their claims while its registry row is fresh
    (fenced by job), so left to the cluster they would wait for the row to go stale."""
    c = jobs.c
    text = error.format(node=node_id)
    values = back_to_queue(dialect, text)
    mine = sa.and_(c.cluster == cluster, c.state == RUNNING, c.claimed_by == node_id)
    back = (c.id, c.attempts, c.claim_epoch, c.started_at)
    if claims is None:
        rows = list(conn.execute(sa.update(jobs).where(mine).values(values).returning(*back)))
    else:
        rows = []
        for job_id, token in claims:  # a handful, at a stop
            stmt = (sa.update(jobs).where(mine, c.id == job_id, c.claim_epoch == token)
                    .values(values).returning(*back))
            rows.extend(conn.execute(stmt))
    record_attempts(conn, dialect, [
        {"job_id": r.id, "attempt": r.attempts, "node": node_id, "epoch": r.claim_epoch,
         "started_at": r.started_at, "outcome": "abandoned", "error": text[:MAX_ERROR_CHARS]}
        for r in rows])
    return [int(r.id) for r in rows]


def _cancel_asked() -> sa.ColumnElement[bool]:
    return jobs.c.cancel_requested_at.is_not(None)


def cancels_requested(conn: sa.Connection, cluster: str, ids: Sequence[int]) -> list[int]:
    """Which of ``ids`` (jobs a worker runs) have a cancel requested: primary-key probes,
    asked at most every :data:`ringwork.worker.cancels.CHECK_INTERVAL` while jobs run."""
    if not ids:
        return []
    c = jobs.c
    stmt = sa.select(c.id).where(c.id.in_(list(ids)), c.cluster == cluster, c.state == RUNNING,
                                 _cancel_asked())
    return [int(i) for i in conn.execute(stmt).scalars()]


def _missing_or_wrong(conn: sa.Connection, cluster: str, job_id: int, action: str) -> Exception:
    state = conn.execute(
        sa.select(jobs.c.state).where(jobs.c.id == job_id, jobs.c.cluster == cluster)
    ).scalar()
    if state is None:
        return JobNotFound(f"no job {job_id} in cluster {cluster!r}")
    return InvalidJobState(f"job {job_id} is {state}; {action}")


def cancel(conn: sa.Connection, dialect: str, cluster: str, job_id: int) -> str:
    """A queued job is ``cancelled`` at once, and so is a dead one that blocks its ordered key
    (``block_key_on_dead``: cancelling it lets the key's next job run); a running one gets its
    request recorded (its worker ends it). Returns ``"cancelled"`` or ``"requested"``."""
    c = jobs.c
    blocking = sa.and_(c.state == sa.literal_column("'dead'"), c.ordered, c.block_key_on_dead)
    stmt = (
        sa.update(jobs)
        .where(c.id == job_id, c.cluster == cluster, sa.or_(c.state == QUEUED, blocking))
        .values(state="cancelled", finished_at=now_expr(dialect))
        .returning(c.id)
    )
    if conn.execute(stmt).scalar() is not None:
        return "cancelled"
    if conn.execute(_request_cancel(dialect).where(c.id == job_id, c.cluster == cluster)
                    .returning(c.id)).scalar() is not None:
        return "requested"
    # (A dead job that blocks its key was cancelled above: one that does not is finished.)
    raise _missing_or_wrong(conn, cluster, job_id,
                            "only a queued or running job can be cancelled")


def _request_cancel(dialect: str) -> sa.Update:
    """Record a cancel for running jobs (the first request's time is kept)."""
    c = jobs.c
    return sa.update(jobs).where(c.state == RUNNING).values(
        cancel_requested_at=sa.func.coalesce(c.cancel_requested_at, now_expr(dialect)))


def cancel_task(conn: sa.Connection, dialect: str, cluster: str, task: str) -> tuple[int, int]:
    """Every queued job of ``task`` cancelled, every running one asked to end:
    ``(cancelled, requested)``."""
    c = jobs.c
    queued = conn.execute(
        sa.update(jobs).where(c.cluster == cluster, c.task == task, c.state == QUEUED)
        .values(state="cancelled", finished_at=now_expr(dialect))
    ).rowcount
    running = conn.execute(
        _request_cancel(dialect).where(c.cluster == cluster, c.task == task,
                                       c.cancel_requested_at.is_(None))
    ).rowcount
    return int(queued or 0), int(running or 0)


def _requeue(dialect: str) -> sa.Update:
    """A finished job back to ``queued`` as if new: attempts, claim and cancel reset."""
    return sa.update(jobs).values(
        state="queued",
        run_at=now_expr(dialect),
        attempts=0,
        claimed_by=None,
        claim_epoch=None,
        started_at=None,
        finished_at=None,
        cancel_requested_at=None,
    )


def retry(conn: sa.Connection, dialect: str, cluster: str, job_id: int) -> None:
    c = jobs.c
    stmt = (
        _requeue(dialect)
        .where(c.id == job_id, c.cluster == cluster, c.state.in_(("dead", "cancelled")))
        .returning(c.id)
    )
    try:
        with conn.begin_nested():
            updated = conn.execute(stmt).scalar()
    except sa.exc.IntegrityError:
        raise InvalidJobState(
            f"job {job_id} cannot be retried: another job with its dedupe key is unfinished"
        ) from None
    if updated is None:
        raise _missing_or_wrong(
            conn, cluster, job_id, "only a dead or cancelled job can be retried"
        )


def retry_all(
    conn: sa.Connection, dialect: str, cluster: str, state: str, task: str | None
) -> tuple[int, int]:
    """Every ``state`` (dead or cancelled) job, of ``task`` if given, queued again:
    ``(retried, skipped)``.

    Jobs without a dedupe key go in one statement. One with a key may collide with an
    unfinished job of the same key (or with another retried one): those go one by one, each
    in a savepoint, and a collision is skipped and counted, not an error for the batch.
    """
    if state not in ("dead", "cancelled"):
        raise InvalidJobState(f"only dead or cancelled jobs can be retried, not {state!r}")
    c = jobs.c
    scope = [c.cluster == cluster, c.state == state]
    if task is not None:
        scope.append(c.task == task)
    retried = int(conn.execute(
        _requeue(dialect).where(*scope, c.dedupe_key.is_(None))).rowcount or 0)
    skipped = 0
    keyed = conn.execute(
        sa.select(c.id).where(*scope, c.dedupe_key.is_not(None)).order_by(c.id.desc())
    ).scalars().all()
    for job_id in keyed:  # newest first: the latest of a key wins
        try:
            with conn.begin_nested():
                conn.execute(_requeue(dialect).where(c.id == job_id))
            retried += 1
        except sa.exc.IntegrityError:
            skipped += 1
    return retried, skipped
