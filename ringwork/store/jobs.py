"""Job lifecycle statements: enqueue, claim, complete, fail, cancel, retry, inspection.

Each function runs inside a transaction the caller (:class:`ringwork.store.Store`) opened and
does one statement on the hot paths. Every timestamp, and every "is it due yet", is the
database's own clock inside the statement (:mod:`ringwork.store.clock`), never the process's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

import sqlalchemy as sa

from ringwork.errors import DatabaseError, InvalidJobState, JobNotFound
from ringwork.job import Job, JobRecord, NewJob, Outcome, encoded_payload, payload_encoder
from ringwork.store import queries
from ringwork.store.clock import SQLITE_CLOCK, now_expr, sqlite_clock, sqlite_offset
from ringwork.store.schema import JOB_STATES, jobs

#: Rows per enqueue statement (bounded to stay well inside SQLite's bound-variable/JSON limits
#: and to keep one statement's lock footprint modest).
ENQUEUE_CHUNK = 1000
#: PostgreSQL chunks at least this big go in by COPY. COPY saves server time per row but costs
#: two more round trips (ids, then the data) than the one INSERT statement, which therefore wins
#: for a few jobs -- above all for the single job of ``App.enqueue``, on the latency path.
COPY_MIN_ROWS = 64
#: last_error is capped so a huge traceback cannot bloat the row.
MAX_ERROR_CHARS = 8000

# Literals, not parameters, so the planners can use the partial indexes.
QUEUED: sa.ColumnClause[Any] = sa.literal_column("'queued'")
RUNNING: sa.ColumnClause[Any] = sa.literal_column("'running'")


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken to be UTC (documented in docs/store.md)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _with_clock(params: dict[str, Any], clock: str | None) -> dict[str, Any]:
    """``params`` for a SQLite statement's plain (``clock`` None) or skewed variant."""
    if clock is not None:
        params[SQLITE_CLOCK] = clock
    return params


def _sqlite_ts(value: datetime) -> str:
    # The text format SQLAlchemy's SQLite DATETIME stores, so values compare as text.
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S.%f")


def enqueue(
    conn: sa.Connection, dialect: str, cluster: str, channel: str, new: Sequence[NewJob]
) -> list[int]:
    """Insert ``new`` (one statement per chunk); ids in input order, deduplicated ids reused."""
    ids: list[int] = [0] * len(new)
    # Within one batch, a repeated (task, dedupe_key) is the same job: send only the first.
    first: dict[tuple[str, str], int] = {}
    send: list[int] = []
    for i, job in enumerate(new):
        if job.dedupe_key is not None:
            k = (job.task, job.dedupe_key)
            if k in first:
                continue
            first[k] = i
        send.append(i)
    encode: Callable[[Any], str] | None = None
    for start in range(0, len(send), ENQUEUE_CHUNK):
        chunk = send[start : start + ENQUEUE_CHUNK]
        rows = [new[i] for i in chunk]
        payloads: list[str] = []
        for j in rows:
            text = encoded_payload(j)
            if text is None:  # a NewJob built by the caller: encode it here
                encode = encode or payload_encoder()
                text = encode(j.payload)
            payloads.append(text)
        by_dedupe: dict[tuple[str, str], int] = {}
        copy = len(rows) >= COPY_MIN_ROWS and all(j.dedupe_key is None for j in rows)
        if dialect == "postgresql" and copy:
            fresh = _copy_pg(conn, cluster, channel, rows, payloads)
        else:
            if dialect == "postgresql":
                result = conn.execute(
                    queries.ENQUEUE_PG,
                    {"cluster": cluster, "channel": channel, "rows": _pg_rows(rows, payloads)},
                )
            else:
                sqlite_rows = [_sqlite_row(j, p) for j, p in zip(rows, payloads, strict=True)]
                doc = json.dumps(sqlite_rows, separators=(",", ":"))
                clock = sqlite_clock()
                result = conn.execute(
                    queries.enqueue_sqlite(clock is not None),
                    _with_clock({"cluster": cluster, "rows": doc}, clock),
                )
            fresh = []
            for job_id, task, dedupe_key in result:
                if dedupe_key is None:
                    fresh.append(job_id)
                else:
                    by_dedupe[(task, dedupe_key)] = job_id
            # Rows without a dedupe key are always new, and ids are assigned in input order.
            fresh.sort()
        fresh_iter = iter(fresh)
        for i in chunk:
            job = new[i]
            if job.dedupe_key is None:
                ids[i] = next(fresh_iter)
            else:
                ids[i] = by_dedupe[(job.task, job.dedupe_key)]
    for i, job in enumerate(new):
        if job.dedupe_key is not None and ids[i] == 0:
            ids[i] = ids[first[(job.task, job.dedupe_key)]]
    return ids


def _wake_payload(partitions: set[int]) -> str:
    """The NOTIFY payload: the partitions that got due jobs, ``*`` when there are very many."""
    if len(partitions) > 1000:
        return "*"
    return ",".join(map(str, sorted(partitions)))


# COPY's text format: backslash escapes for the four characters that would break a row.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _copy_json(text: str) -> str:
    """JSON text from ``json.dumps`` has no raw tab, newline or CR: only backslashes to double."""
    if "\\" in text:
        return text.replace("\\", "\\\\")
    return text


def _copy_pg(
    conn: sa.Connection, cluster: str, channel: str, rows: Sequence[NewJob], payloads: list[str]
) -> list[int]:
    """Insert a chunk without dedupe keys with COPY; the new ids, ascending (= input order).

    About half the server time of ``INSERT .. SELECT`` from a JSON document: no per-row JSON
    extraction, no ``ON CONFLICT`` speculative insertion (which only dedupe keys need). The ids
    come first, from the sequence in one statement that also queues the NOTIFY when every job
    is due now (the common case); timestamps are the transaction's ``now()``, exactly what the
    ``INSERT`` would store. NOTIFY and rows commit (or roll back) together.
    """
    timed = any(j.run_at is not None or j.delay for j in rows)
    wake = None if timed else _wake_payload({j.partition for j in rows})
    now, new_ids, _ = conn.execute(
        queries.ENQUEUE_PG_IDS, {"n": len(rows), "channel": channel, "wake": wake}
    ).one()
    ts = now.isoformat()  # the server's clock, as the INSERT would take it
    head = f"\t{_copy_text(cluster)}\t"
    tasks = {task: _copy_text(task) for task in {j.task for j in rows}}
    data = "".join(
        [
            f"{job_id}{head}{tasks[j.task]}\t{_copy_text(j.key)}\t{j.partition}\t"
            f"{_copy_json(payload)}\t{j.priority}\tqueued\t"
            f"{_run_at_text(j, now, ts)}\t0\t"
            f"{j.max_attempts}\t{'t' if j.ordered else 'f'}\t{ts}\n"
            for job_id, j, payload in zip(new_ids, rows, payloads, strict=True)
        ]
    )
    raw = conn.connection.driver_connection
    assert raw is not None
    try:
        encoded = data.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate; the INSERT path fails in the server
        raise DatabaseError(f"job text is not valid UTF-8: {exc}") from None
    with raw.cursor() as cursor, cursor.copy(queries.ENQUEUE_PG_COPY) as copy:
        copy.write(encoded)
    if timed:
        due = {j.partition for j in rows if _due_at(j, now) <= now}
        if due:
            conn.execute(queries.NOTIFY_PG, {"channel": channel, "wake": _wake_payload(due)})
    return sorted(new_ids)


def _due_at(j: NewJob, now: datetime) -> datetime:
    """When ``j`` becomes due, ``now`` being the database's time of the insert."""
    if j.run_at is not None:
        return as_utc(j.run_at)
    return now + timedelta(seconds=j.delay) if j.delay else now


def _run_at_text(j: NewJob, now: datetime, now_text: str) -> str:
    if j.run_at is None and not j.delay:
        return now_text
    return _due_at(j, now).isoformat()


def _pg_rows(rows: Sequence[NewJob], payloads: list[str]) -> str:
    """The chunk as one JSON array of rows, the payloads spliced in as already encoded."""
    body = ",".join(
        [
            f"[{_json_str(j.task)},{_json_str(j.key)},{j.partition},{payload},{j.priority},"
            f"{'null' if j.run_at is None else _json_str(as_utc(j.run_at).isoformat())},"
            f"{j.max_attempts},{'true' if j.ordered else 'false'},"
            f"{'null' if j.dedupe_key is None else _json_str(j.dedupe_key)},"
            f"{float(j.delay) if j.delay else 'null'}]"
            for j, payload in zip(rows, payloads, strict=True)
        ]
    )
    return f"[{body}]"


def _sqlite_row(j: NewJob, payload: str) -> list[Any]:
    run_at = None if j.run_at is None else _sqlite_ts(j.run_at)
    # A delay is added to the statement's clock in SQL (a date modifier); no delay: now.
    return [
        j.task,
        j.key,
        j.partition,
        payload,
        j.priority,
        run_at,
        j.max_attempts,
        j.ordered,
        j.dedupe_key,
        sqlite_offset(j.delay or 0.0),
    ]


def claim(
    conn: sa.Connection,
    dialect: str,
    cluster: str,
    node_id: str,
    owned: Mapping[int, int],
    limit: int,
) -> list[Job]:
    """Claim up to ``limit`` runnable jobs of the partitions ``node_id`` owns at those epochs."""
    if limit <= 0 or not owned:
        return []
    if dialect == "postgresql":
        return claimed_jobs(conn.execute(queries.CLAIM_PG,
                                         claim_params_pg(cluster, node_id, owned, limit)))
    parts = sorted(owned)
    params: dict[str, Any] = {f"p{i}": p for i, p in enumerate(parts)}
    params.update({f"e{i}": owned[p] for i, p in enumerate(parts)})
    params.update(owned=json.dumps([[p, owned[p]] for p in parts]),
                  cluster=cluster, node=node_id, limit=limit)
    clock = sqlite_clock()
    stmt = queries.claim_sqlite(len(parts), clock is not None)
    return claimed_jobs(conn.execute(stmt, _with_clock(params, clock)))


def claim_params_pg(
    cluster: str, node_id: str, owned: Mapping[int, int], limit: int
) -> dict[str, Any]:
    """The parameters of :data:`queries.CLAIM_PG` (also run by the worker's loop claimer)."""
    parts = sorted(owned)
    return {"parts": parts, "epochs": [owned[p] for p in parts], "cluster": cluster,
            "node": node_id, "limit": limit}


def claimed_jobs(rows: Iterable[Sequence[Any]]) -> list[Job]:
    """Jobs from a claim's rows (the columns of ``queries._CLAIM_COLUMNS``, in that order),
    highest priority first, then oldest."""
    ordered = sorted(rows, key=lambda r: (-r[8], r[0]))
    return [
        Job(id=r[0], task=r[1], key=r[2], partition=r[3], payload=r[4], attempt=r[5],
            max_attempts=r[6], token=r[7])
        for r in ordered
    ]


def complete(
    conn: sa.Connection,
    dialect: str,
    cluster: str,
    node_id: str,
    done: Sequence[tuple[int, int]],
) -> list[int]:
    """Mark ``(job_id, token)`` pairs succeeded; the ids that were fenced (not updated)."""
    if not done:
        return []
    if dialect == "postgresql":
        params: dict[str, Any] = {"ids": [d[0] for d in done], "tokens": [d[1] for d in done]}
        stmt = queries.COMPLETE_PG
    else:
        clock = sqlite_clock()
        params = _with_clock({"done": json.dumps([list(d) for d in done])}, clock)
        stmt = queries.complete_sqlite(clock is not None)
    params.update(cluster=cluster, node=node_id)
    updated = set(conn.execute(stmt, params).scalars())
    return [job_id for job_id, _ in done if job_id not in updated]


def release_unknown(
    conn: sa.Connection, cluster: str, node_id: str, known: Sequence[int]
) -> list[int]:
    """Re-queue jobs claimed by ``node_id`` that it does not know it holds; their ids.

    After a commit whose reply was lost (connection cut between COMMIT and its answer) the
    claimed jobs are ``running`` in the database but in no worker's memory, and no claim would
    ever pick them again until their partition moved. They never started, so the claim's
    attempt is given back.
    """
    c = jobs.c
    stmt = (
        sa.update(jobs)
        .where(c.cluster == cluster, c.claimed_by == node_id, c.state == "running")
        .values(state="queued", claimed_by=None, claim_epoch=None, started_at=None,
                attempts=c.attempts - 1)
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
) -> Outcome:
    """Record a failed attempt: back to queued after ``retry_delay``, or dead; fenced if stale."""
    c = jobs.c
    if retry_delay is None:
        retry: sa.ColumnElement[bool] = sa.false()
    else:
        retry = c.attempts < c.max_attempts
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
            state=sa.case((retry, "queued"), else_="dead"),
            run_at=sa.case((retry, now_expr(dialect, retry_delay or 0.0)), else_=c.run_at),
            finished_at=sa.case((retry, None), else_=now),
            claimed_by=sa.case((retry, None), else_=c.claimed_by),
        )
        .returning(c.state)
    )
    state = conn.execute(stmt).scalar()
    if state is None:
        return Outcome.FENCED
    return Outcome.RETRY if state == "queued" else Outcome.DEAD


def _missing_or_wrong(conn: sa.Connection, cluster: str, job_id: int, action: str) -> Exception:
    state = conn.execute(
        sa.select(jobs.c.state).where(jobs.c.id == job_id, jobs.c.cluster == cluster)
    ).scalar()
    if state is None:
        return JobNotFound(f"no job {job_id} in cluster {cluster!r}")
    return InvalidJobState(f"job {job_id} is {state}; {action}")


def cancel(conn: sa.Connection, dialect: str, cluster: str, job_id: int) -> None:
    c = jobs.c
    stmt = (
        sa.update(jobs)
        .where(c.id == job_id, c.cluster == cluster, c.state == QUEUED)
        .values(state="cancelled", finished_at=now_expr(dialect))
        .returning(c.id)
    )
    if conn.execute(stmt).scalar() is None:
        raise _missing_or_wrong(conn, cluster, job_id, "only a queued job can be cancelled")


def retry(conn: sa.Connection, dialect: str, cluster: str, job_id: int) -> None:
    c = jobs.c
    stmt = (
        sa.update(jobs)
        .where(c.id == job_id, c.cluster == cluster, c.state.in_(("dead", "cancelled")))
        .values(
            state="queued",
            run_at=now_expr(dialect),
            attempts=0,
            claimed_by=None,
            claim_epoch=None,
            started_at=None,
            finished_at=None,
        )
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


def _record(row: sa.Row[Any]) -> JobRecord:
    return JobRecord(**row._asdict())


def get_job(conn: sa.Connection, cluster: str, job_id: int) -> JobRecord | None:
    row = conn.execute(
        sa.select(jobs).where(jobs.c.id == job_id, jobs.c.cluster == cluster)
    ).first()
    return None if row is None else _record(row)


def list_jobs(
    conn: sa.Connection, cluster: str, state: str | None, task: str | None, limit: int
) -> list[JobRecord]:
    """Newest first."""
    stmt = sa.select(jobs).where(jobs.c.cluster == cluster)
    if state is not None:
        if state not in JOB_STATES:
            raise ValueError(f"unknown job state {state!r}; one of {', '.join(JOB_STATES)}")
        stmt = stmt.where(jobs.c.state == state)
    if task is not None:
        stmt = stmt.where(jobs.c.task == task)
    stmt = stmt.order_by(jobs.c.id.desc()).limit(limit)
    return [_record(r) for r in conn.execute(stmt)]


def counts_by_state(conn: sa.Connection, cluster: str) -> dict[str, int]:
    counts = dict.fromkeys(JOB_STATES, 0)
    stmt = (
        sa.select(jobs.c.state, sa.func.count())
        .where(jobs.c.cluster == cluster)
        .group_by(jobs.c.state)
    )
    for state, n in conn.execute(stmt):
        counts[state] = n
    return counts


def backlog_by_partition(conn: sa.Connection, cluster: str) -> dict[int, int]:
    stmt = (
        sa.select(jobs.c.partition, sa.func.count())
        .where(jobs.c.cluster == cluster, jobs.c.state == QUEUED)
        .group_by(jobs.c.partition)
    )
    return {p: n for p, n in conn.execute(stmt)}
