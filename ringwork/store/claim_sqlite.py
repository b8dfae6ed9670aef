"""The SQLite claim, completion and attempt guard, as text (why text: :mod:`.claim`), and the
parameters they bind.

Every statement runs inside ``BEGIN IMMEDIATE`` (the database write lock), so its reads and its
write are one step. A batch is one JSON array read through ``json_each``; the claim is one
``UNION ALL`` arm per owned partition that SQLite merges lazily (a correlated scan per partition
past :data:`MERGE_MAX_PARTITIONS`). Each statement has a plain variant and a *skewed* one that
takes ``:clock``, for a process whose libc clock is off the host's (``clock.py``).

Threads: none of its own; statements, run by :mod:`.claim`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from ringwork.store.claim_shape import CLAIM_COLUMNS, ORDERED_HEAD
from ringwork.store.clock import sqlite_now

#: SQLite: above this many owned partitions the claim uses one correlated scan per partition
#: instead of a merged UNION ALL (statement size; SQLite allows at most 500 compound terms).
MERGE_MAX_PARTITIONS = 200


_CLAIM_SQLITE_SET = """
UPDATE ringwork_jobs
SET state = 'running', attempts = attempts + 1, claimed_by = :node, started_at = {now},
    claim_epoch = (SELECT p.epoch FROM ringwork_partitions AS p
                   WHERE p.cluster = ringwork_jobs.cluster
                     AND p."partition" = ringwork_jobs."partition")
"""

# Wide fallback: a correlated, limited index scan per owned partition, merged in a temp b-tree.
_CLAIM_SQLITE_WIDE_WHERE = """
WHERE id IN (
    SELECT c.id{cols}
    FROM ringwork_partitions AS p
    JOIN json_each(:owned) AS w
      ON p."partition" = json_extract(w.value, '$[0]') AND p.epoch = json_extract(w.value, '$[1]')
    JOIN ringwork_jobs AS c ON c.id IN (
        SELECT t.id FROM ringwork_jobs AS t
        WHERE t.cluster = :cluster AND t."partition" = p."partition"
          AND t.state = 'queued' AND t.run_at <= {now}{skip}
          AND ORDERED_HEAD_T
        ORDER BY t.priority DESC, t.id
        LIMIT :limit)
    WHERE p.cluster = :cluster AND p.owner = :node
    ORDER BY c.priority DESC, c.id
    LIMIT :limit
)"""

_ARM_SQLITE = """    SELECT t.id, t.priority{task} FROM ringwork_jobs AS t
    WHERE t.cluster = :cluster AND t."partition" = :p{i}
      AND t.state = 'queued' AND t.run_at <= {now}
      AND EXISTS (SELECT 1 FROM ringwork_partitions AS p
                  WHERE p.cluster = :cluster AND p."partition" = :p{i}
                    AND p.owner = :node AND p.epoch = :e{i}){skip}
      AND ORDERED_HEAD_T"""

# Per-task limits (``concurrency=``), as in _TOP_PG_CAPPED: the tasks with no room left
# (``:full``, a JSON array) are skipped inside the scans, and of the merged candidates a task
# with some room (``:caps``, a JSON object of task -> room) keeps at most that many.
_SKIP_FULL_SQLITE = "\n      AND {t}.task NOT IN (SELECT value FROM json_each(:full))"
_CAPPED_SQLITE = """
WHERE id IN (SELECT r.id FROM (
    SELECT m.id, m.priority, m.task,
           row_number() OVER (PARTITION BY m.task ORDER BY m.priority DESC, m.id) AS rn
    FROM ({candidates}) AS m
) AS r
WHERE r.rn <= COALESCE((SELECT k.value FROM json_each(:caps) AS k WHERE k."key" = r.task),
                       :limit)
ORDER BY r.priority DESC, r.id
LIMIT :limit)"""

_CLAIM_SQLITE_RETURNING = """
RETURNING id, task, "key", "partition", payload, attempts, max_attempts, claim_epoch, priority,
          traceparent,
          (julianday(started_at) - julianday(max(run_at, enqueued_at))) * 86400.0 AS waited
"""


@functools.lru_cache(maxsize=256)
def claim_sqlite(owned: int, skewed: bool = False, capped: bool = False) -> Any:
    """The SQLite claim for ``owned`` partitions (``:p0``/``:e0``.. in ascending order).

    ``skewed``: the variant that takes ``:clock`` (see the module's docstring). ``capped``: the
    variant with per-task limits (``:full`` and ``:caps``, see :func:`claim_params_sqlite`).

    Up to :data:`MERGE_MAX_PARTITIONS` (SQLite allows 500 compound terms), a ``UNION ALL`` with
    ``ORDER BY .. LIMIT`` that SQLite runs as a lazy ``MERGE (UNION ALL)`` of per-partition index
    scans, reading about ``limit + owned`` rows.
    """
    now = sqlite_now(skewed)
    if owned > MERGE_MAX_PARTITIONS:
        if not capped:
            where = _CLAIM_SQLITE_WIDE_WHERE.format(now=now, cols="", skip="")
        else:
            wide = _CLAIM_SQLITE_WIDE_WHERE.format(
                now=now, cols=", c.priority, c.task",
                skip=_SKIP_FULL_SQLITE.format(t="t").replace("\n      ", "\n          "))
            where = _CAPPED_SQLITE.format(
                candidates=wide.strip().removeprefix("WHERE id IN (").removesuffix(")"))
    else:
        task, skip = ("", "") if not capped else (", t.task", _SKIP_FULL_SQLITE.format(t="t"))
        arms = "\n    UNION ALL\n".join(_ARM_SQLITE.format(i=i, now=now, task=task, skip=skip)
                                         for i in range(owned))
        merged = f"""
{arms}
    ORDER BY 2 DESC, 1
    LIMIT :limit
"""
        where = (_CAPPED_SQLITE.format(candidates=merged) if capped
                 else f"""
WHERE id IN (SELECT id FROM ({merged}))""")
    return (
        sa.text(_CLAIM_SQLITE_SET.format(now=now)
                + where.replace("ORDERED_HEAD_T", ORDERED_HEAD.format(j="t"))
                + _CLAIM_SQLITE_RETURNING)
        .columns(**CLAIM_COLUMNS)
    )


_DONE_SQLITE = """(SELECT json_extract(value, '$[0]') AS jid, json_extract(value, '$[1]') AS tok,
        json_extract(value, '$[2]') AS res
      FROM json_each(:done)) AS d"""

_FENCE_SQLITE = """ringwork_jobs.id = d.jid AND ringwork_jobs.claim_epoch = d.tok
  AND +ringwork_jobs.cluster = :cluster AND ringwork_jobs.claimed_by = :node
  AND ringwork_jobs.state = 'running'"""


@functools.lru_cache(maxsize=4)
def complete_sqlite(skewed: bool = False, results: bool = False) -> Any:
    """The SQLite completion; ``skewed``: the variant that takes ``:clock``; ``results``: each
    ``:done`` element is ``[id, token, result JSON text]`` and the result is written."""
    result = ", result = d.res" if results else ""
    return (
        sa.text(f"""
UPDATE ringwork_jobs SET state = 'succeeded', finished_at = {sqlite_now(skewed)}{result}
FROM {_DONE_SQLITE}
WHERE {_FENCE_SQLITE}
RETURNING ringwork_jobs.id
""")
        .columns(id=sa.BigInteger)
    )


@functools.lru_cache(maxsize=2)
def history_sqlite(skewed: bool = False) -> Any:
    """The attempt rows of a SQLite completion, run just before it with the same parameters.

    SQLite has no data-modifying CTE. Both statements run under the database write lock
    (``BEGIN IMMEDIATE``), so this insert sees exactly the rows the update then changes.
    """
    return sa.text(f"""
INSERT INTO ringwork_attempts (job_id, attempt, node, epoch, started_at, finished_at, outcome)
SELECT ringwork_jobs.id, ringwork_jobs.attempts, ringwork_jobs.claimed_by,
       ringwork_jobs.claim_epoch, ringwork_jobs.started_at, {sqlite_now(skewed)}, 'succeeded'
FROM {_DONE_SQLITE} JOIN ringwork_jobs ON ringwork_jobs.id = d.jid
WHERE {_FENCE_SQLITE}
""")


COMPLETE_SQLITE = complete_sqlite(False)


#: SQLite's :data:`ATTEMPT_GUARD_PG`: no row locks, and none needed -- a later write of this
#: transaction fails (it cannot upgrade its snapshot) if another connection wrote in between.
ATTEMPT_GUARD_SQLITE = sa.text("""
SELECT id FROM ringwork_jobs
WHERE id = :id AND +cluster = :cluster AND claimed_by = :node AND claim_epoch = :token
  AND attempts = :attempt AND state = 'running'
""").columns(id=sa.BigInteger)


def claim_params_sqlite(
    cluster: str, node_id: str, owned: Mapping[int, int], limit: int,
    rooms: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The parameters of :func:`claim_sqlite` (both forms: ``:pN``/``:eN`` and ``:owned``;
    ``:full`` and ``:caps`` with ``rooms``)."""
    parts = sorted(owned)
    params: dict[str, Any] = {f"p{i}": p for i, p in enumerate(parts)}
    params.update({f"e{i}": owned[p] for i, p in enumerate(parts)})
    params.update(owned=json.dumps([[p, owned[p]] for p in parts]),
                  cluster=cluster, node=node_id, limit=limit)
    if rooms is not None:
        params.update(full=json.dumps(sorted(t for t, r in rooms.items() if r <= 0)),
                      caps=json.dumps({t: r for t, r in sorted(rooms.items()) if r > 0}))
    return params
