"""Enqueue: jobs into ``ringwork_jobs`` in a fixed number of statements per batch, and the
wake-up that tells the owners.

A batch never costs a statement per job. It travels as one JSON document: PostgreSQL reads it
with ``json_array_elements``, SQLite with ``json_each`` (``json.dumps`` is C; psycopg's
text-array quoting is a Python regex per element, which was ~40% of an enqueue's client time).
A PostgreSQL chunk of at least :data:`COPY_MIN_ROWS` jobs without dedupe keys goes in by
``COPY`` instead: no per-row JSON extraction and no ``ON CONFLICT`` speculative insertion.

Dedupe is ``ON CONFLICT`` against the partial unique index, never SELECT-then-INSERT: a
duplicate gets the unfinished job's id atomically. Ids come back in input order.

The wake-up, PostgreSQL only: the same transaction calls ``pg_notify`` with the partitions that
got due jobs, so it is delivered at commit, exactly when the rows become visible. The payload's
format is :mod:`ringwork.store.listen`'s; past :data:`WAKE_LIST_MAX` partitions it is
``WAKE_ALL``, a rule the SQL statement and :func:`wake_payload` both take from here.

The statements are run by a *runner*: :func:`enqueue` for a SQLAlchemy ``Connection`` (the
store's own transactions, and a caller's through :mod:`.external`), :mod:`.external`'s for a raw
psycopg connection, :mod:`.aio`'s on an event loop. :func:`enqueue_steps` is the one place that
decides which statements a batch takes.

Threads: runs on the caller's thread, inside a transaction of :class:`~ringwork.store.Store` or
of the caller's connection: an application's (``App.enqueue``, any thread), the CLI's, a
handler's; or on an event loop (``App.enqueue_async``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Generator, Sequence
from datetime import datetime, timedelta, timezone
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

import sqlalchemy as sa

from ringwork.errors import DatabaseError
from ringwork.job import NewJob, encoded_payload, payload_encoder
from ringwork.store.clock import sqlite_clock, sqlite_now, sqlite_offset, with_clock
from ringwork.store.listen import WAKE_ALL
from ringwork.store.schema import UTCDateTime

#: Rows per enqueue statement (bounded to stay well inside SQLite's bound-variable/JSON limits
#: and to keep one statement's lock footprint modest).
ENQUEUE_CHUNK = 1000
#: PostgreSQL chunks at least this big go in by COPY. COPY saves server time per row but costs
#: two more round trips (ids, then the data) than the one INSERT statement, which therefore wins
#: for a few jobs -- above all for the single job of ``App.enqueue``, on the latency path.
COPY_MIN_ROWS = 64
#: A wake-up lists at most this many partitions; more wake every worker (``WAKE_ALL``), which
#: keeps a NOTIFY payload far below PostgreSQL's 8000-byte limit.
WAKE_LIST_MAX = 1000

_DEDUPE_CONFLICT = """ON CONFLICT (cluster, task, dedupe_key)
        WHERE dedupe_key IS NOT NULL AND state IN ('queued', 'running')
    DO UPDATE SET dedupe_key = excluded.dedupe_key"""

_INSERT_COLUMNS = """INSERT INTO ringwork_jobs (cluster, task, "key", "partition", payload,
        priority, state, run_at, attempts, max_attempts, ordered, dedupe_key, enqueued_at,
        block_key_on_dead, traceparent)"""

# --- PostgreSQL -------------------------------------------------------------------------------

#: One chunk as the JSON array of :func:`_pg_rows`; returns ``(id, task, dedupe_key)`` per row.
ENQUEUE_PG = sa.text(f"""
WITH ins AS (
    {_INSERT_COLUMNS}
    SELECT :cluster, t.r->>0, t.r->>1, CAST(t.r->>2 AS integer), t.r->3,
           CAST(t.r->>4 AS integer), 'queued',
           COALESCE(CAST(t.r->>5 AS timestamptz),
                    now() + make_interval(secs => COALESCE(CAST(t.r->>9 AS float8), 0))), 0,
           CAST(t.r->>6 AS integer), CAST(t.r->>7 AS boolean), t.r->>8, now(),
           CAST(t.r->>10 AS boolean), t.r->>11
    FROM json_array_elements(CAST(:rows AS json)) WITH ORDINALITY AS t(r, ord)
    ORDER BY t.ord
    {_DEDUPE_CONFLICT}
    RETURNING id, task, dedupe_key, "partition", run_at
),
wake AS (
    SELECT pg_notify(:channel, CASE WHEN count(DISTINCT "partition") > {WAKE_LIST_MAX}
                     THEN '{WAKE_ALL}'
                     ELSE string_agg(DISTINCT CAST("partition" AS text), ',') END)
    FROM ins WHERE run_at <= now() HAVING count(*) > 0
)
SELECT ins.id, ins.task, ins.dedupe_key FROM ins, (SELECT count(*) FROM wake) AS woke
""").columns(id=sa.BigInteger, task=sa.String, dedupe_key=sa.String)

# A chunk without dedupe keys is COPYed instead (:func:`_copy_pg`): this statement hands out its
# ids in ascending order (nextval over generate_series, one round trip) together with the
# transaction's now() for the timestamps, and queues the NOTIFY when :wake is given (it is
# delivered at commit, with the rows). ``ON CONFLICT`` is not needed: a NULL dedupe key never
# enters the partial unique index, and a queued row never enters the running one.
ENQUEUE_PG_IDS = sa.text("""
SELECT now() AS now,
       ARRAY(SELECT nextval('ringwork_jobs_id_seq')
             FROM generate_series(1, CAST(:n AS integer))) AS ids,
       CASE WHEN CAST(:wake AS text) IS NOT NULL
            THEN pg_notify(:channel, CAST(:wake AS text)) END AS woke
""").columns(now=UTCDateTime)

ENQUEUE_PG_COPY = """COPY ringwork_jobs (id, cluster, task, "key", "partition", payload, priority,
    state, run_at, attempts, max_attempts, ordered, enqueued_at, block_key_on_dead, traceparent)
    FROM STDIN"""

NOTIFY_PG = sa.text("SELECT pg_notify(:channel, :wake)")

# --- SQLite -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def enqueue_sqlite(skewed: bool = False) -> Any:
    """The SQLite enqueue; ``skewed``: the variant that takes ``:clock`` (``clock.py``)."""
    delayed = sqlite_now(skewed, "json_extract(r.value, '$[9]')")
    return (
        sa.text(f"""
{_INSERT_COLUMNS}
SELECT :cluster, json_extract(r.value, '$[0]'), json_extract(r.value, '$[1]'),
       json_extract(r.value, '$[2]'), json_extract(r.value, '$[3]'),
       json_extract(r.value, '$[4]'), 'queued',
       COALESCE(json_extract(r.value, '$[5]'), {delayed}),
       0, json_extract(r.value, '$[6]'), json_extract(r.value, '$[7]'),
       json_extract(r.value, '$[8]'), {sqlite_now(skewed)}, json_extract(r.value, '$[10]'),
       json_extract(r.value, '$[11]')
FROM json_each(:rows) AS r
WHERE true
ORDER BY r.key
{_DEDUPE_CONFLICT}
RETURNING id, task, dedupe_key
""")
        .columns(id=sa.BigInteger, task=sa.String, dedupe_key=sa.String)
    )


ENQUEUE_SQLITE = enqueue_sqlite(False)

# --- Running them -----------------------------------------------------------------------------
#
# The enqueue is written once, as a generator of the database work it needs (:class:`Query`,
# :class:`Copy`), so every kind of connection runs the very same statements: a SQLAlchemy
# ``Connection`` (:func:`enqueue`, the store's and a caller's), a raw psycopg connection
# (a Django app's), an asyncio one (``App.enqueue_async``). A runner answers each ``Query`` with
# its rows as mappings and each ``Copy`` with ``None``; the generator returns the ids.


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    """Run ``statement`` with ``params``; send back its rows as mappings (column name -> value)."""

    statement: Any
    params: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Copy:
    """PostgreSQL: ``COPY`` ``data`` (text format, UTF-8) with ``sql``; send back ``None``."""

    sql: str
    data: bytes


Step = Query | Copy
Steps = Generator[Step, Any, list[int]]


def enqueue(
    conn: sa.Connection, dialect: str, cluster: str, channel: str, new: Sequence[NewJob]
) -> list[int]:
    """Insert ``new`` (one statement per chunk); ids in input order, deduplicated ids reused."""
    return run_connection(conn, enqueue_steps(dialect, cluster, channel, new))


def run_connection(conn: sa.Connection, steps: Steps) -> list[int]:
    """Carry out ``steps`` on a SQLAlchemy connection, in its current transaction."""
    answer: Any = None
    try:
        while True:
            step = steps.send(answer)
            if isinstance(step, Query):
                answer = conn.execute(step.statement, step.params).mappings().all()
            else:
                raw = conn.connection.driver_connection
                assert raw is not None
                with raw.cursor() as cursor, cursor.copy(step.sql) as copy:
                    copy.write(step.data)
                answer = None
    except StopIteration as done:
        ids: list[int] = done.value
        return ids


def enqueue_steps(
    dialect: str, cluster: str, channel: str, new: Sequence[NewJob], *, copy: bool = True
) -> Steps:
    """The enqueue of ``new`` as steps for a runner; returns the ids in input order.

    ``copy=False``: never ``COPY`` (a runner that cannot, e.g. SQLAlchemy's asyncio adaptation
    inside ``run_sync``); big batches then take the ``INSERT`` that dedupe batches take anyway.
    """
    ids: list[int] = [0] * len(new)
    # Within one batch, a repeated (task, dedupe_key) is the same job: send only the first
    # (PostgreSQL refuses to touch one row twice in a statement).
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
        use_copy = (
            copy
            and dialect == "postgresql"
            and len(rows) >= COPY_MIN_ROWS
            and all(j.dedupe_key is None for j in rows)
        )
        if use_copy:
            fresh = yield from _copy_pg(cluster, channel, rows, payloads)
        else:
            if dialect == "postgresql":
                query = Query(
                    ENQUEUE_PG,
                    {"cluster": cluster, "channel": channel, "rows": _pg_rows(rows, payloads)},
                )
            else:
                sqlite_rows = [_sqlite_row(j, p) for j, p in zip(rows, payloads, strict=True)]
                doc = json.dumps(sqlite_rows, separators=(",", ":"))
                clock = sqlite_clock()
                query = Query(
                    enqueue_sqlite(clock is not None),
                    with_clock({"cluster": cluster, "rows": doc}, clock),
                )
            fresh = []
            for row in (yield query):
                if row["dedupe_key"] is None:
                    fresh.append(row["id"])
                else:
                    by_dedupe[(row["task"], row["dedupe_key"])] = row["id"]
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


def statement_count(dialect: str, new: Sequence[NewJob]) -> int:
    """An upper bound on the statements :func:`enqueue_steps` sends for ``new``: a runner in
    autocommit needs a transaction of its own when it is more than one."""
    if len(new) <= ENQUEUE_CHUNK and (dialect != "postgresql" or len(new) < COPY_MIN_ROWS):
        return 1
    return 3 * (len(new) // ENQUEUE_CHUNK + 1)


def wake_payload(partitions: set[int]) -> str:
    """The NOTIFY payload for the partitions that got due jobs (``ENQUEUE_PG`` builds the same
    in SQL)."""
    if len(partitions) > WAKE_LIST_MAX:
        return WAKE_ALL
    return ",".join(map(str, sorted(partitions)))


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken to be UTC (documented in docs/store.md)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


#: COPY's text format for NULL.
_COPY_NULL = "\\N"
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
    cluster: str, channel: str, rows: Sequence[NewJob], payloads: list[str]
) -> Generator[Step, Any, list[int]]:
    """Insert a chunk without dedupe keys with COPY; the new ids, ascending (= input order).

    About half the server time of ``INSERT .. SELECT`` from a JSON document. The ids come
    first, from the sequence in one statement that also queues the NOTIFY when every job is due
    now (the common case); timestamps are the transaction's ``now()``, exactly what the
    ``INSERT`` would store. NOTIFY and rows commit (or roll back) together.
    """
    timed = any(j.run_at is not None or j.delay for j in rows)
    wake = None if timed else wake_payload({j.partition for j in rows})
    [row] = yield Query(ENQUEUE_PG_IDS, {"n": len(rows), "channel": channel, "wake": wake})
    # as_utc: a raw psycopg runner hands back the session's time zone, SQLAlchemy UTC already.
    now: datetime = as_utc(row["now"])
    new_ids: list[int] = list(row["ids"])
    ts = now.isoformat()  # the server's clock, as the INSERT would take it
    head = f"\t{_copy_text(cluster)}\t"
    tasks = {task: _copy_text(task) for task in {j.task for j in rows}}
    data = "".join(
        [
            f"{job_id}{head}{tasks[j.task]}\t{_copy_text(j.key)}\t{j.partition}\t"
            f"{_copy_json(payload)}\t{j.priority}\tqueued\t"
            f"{_run_at_text(j, now, ts)}\t0\t"
            f"{j.max_attempts}\t{'t' if j.ordered else 'f'}\t{ts}\t"
            f"{'t' if j.block_key_on_dead else 'f'}\t"
            f"{_COPY_NULL if j.traceparent is None else _copy_text(j.traceparent)}\n"
            for job_id, j, payload in zip(new_ids, rows, payloads, strict=True)
        ]
    )
    try:
        encoded = data.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate; the INSERT path fails in the server
        raise DatabaseError(f"job text is not valid UTF-8: {exc}") from None
    yield Copy(ENQUEUE_PG_COPY, encoded)
    if timed:
        due = {j.partition for j in rows if _due_at(j, now) <= now}
        if due:
            yield Query(NOTIFY_PG, {"channel": channel, "wake": wake_payload(due)})
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
            f"{float(j.delay) if j.delay else 'null'},"
            f"{'true' if j.block_key_on_dead else 'false'},"
            f"{'null' if j.traceparent is None else _json_str(j.traceparent)}]"
            for j, payload in zip(rows, payloads, strict=True)
        ]
    )
    return f"[{body}]"


def _sqlite_row(j: NewJob, payload: str) -> list[Any]:
    # The text format SQLAlchemy's SQLite DATETIME stores, so values compare as text.
    run_at = None if j.run_at is None else as_utc(j.run_at).strftime("%Y-%m-%d %H:%M:%S.%f")
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
        j.block_key_on_dead,
        j.traceparent,
    ]
