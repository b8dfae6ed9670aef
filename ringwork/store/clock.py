"""The database's clock: the one wall clock ringwork stores or compares times by.

Every timestamp written to the database (``enqueued_at``, ``run_at``, ``started_at``,
``finished_at``, ``last_seen``...) and every comparison or age computed against one is taken
from the database inside the statement itself, never bound from the process's clock. Processes
time their own timeouts with ``time.monotonic``. So a worker whose wall clock is wrong stores
the same times, and sees the same ages and due jobs, as one whose clock is right.

* PostgreSQL: the server's clock. Writes use ``now()`` (the transaction's start: every
  timestamp one transaction writes is the same instant, and our transactions are a few
  statements long). Ages use ``clock_timestamp()``, the time of the read itself: a row
  committed after the reading transaction began could otherwise look younger than zero.
* SQLite: the host's kernel clock. SQLite reads ``'now'`` inside the process that runs the
  statement, through libc, so a process whose libc clock is faked (``faketime``'s
  ``LD_PRELOAD``) would read a different time from its neighbours on the same file. Every
  SQLite statement therefore adds this process's *clock offset* as a date modifier
  (``strftime(.., 'now', :clock)``; :func:`sqlite_clock`): the kernel's wall clock minus
  SQLite's ``'now'`` here, measured by :mod:`ringwork.store.hostclock`. It is zero in a normal
  process, which runs the statements without the modifier, exactly as SQLite's own clock.
  Stored as text in exactly the format SQLAlchemy's SQLite ``DATETIME`` writes
  (``YYYY-MM-DD HH:MM:SS.ffffff``), so values written from Python (a user's absolute
  ``run_at``) and by SQL compare correctly as text; SQLite's clock has millisecond
  resolution, hence the three zero digits.

Threads: any; these functions build SQL text and expressions and read only
:mod:`.hostclock`'s offset, which is safe to read from any thread.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from ringwork.store import hostclock
from ringwork.store.schema import UTCDateTime

#: strftime format of a SQLite timestamp (the text SQLAlchemy's DATETIME stores).
SQLITE_FORMAT = "%Y-%m-%d %H:%M:%f000"
#: The bound parameter a hand-written SQLite statement's skewed variant takes: the modifier
#: :func:`sqlite_clock` returns.
SQLITE_CLOCK = "clock"


def sqlite_now(skewed: bool, *modifiers: str) -> str:
    """SQLite: the statement's current time, as stored text, for hand-written statements.

    ``skewed``: the variant for a process whose clock is off the host's, which must be given
    ``{SQLITE_CLOCK: sqlite_clock()}``; the plain variant is what it always was, so a normal
    process pays nothing (a bound modifier in every claim arm cost ~4% of a claim).
    ``modifiers``: further SQL date modifiers (a delay), applied after the offset.
    """
    args = ["'now'", *([f":{SQLITE_CLOCK}"] if skewed else []), *modifiers]
    return f"strftime('{SQLITE_FORMAT}', {', '.join(args)})"


#: SQLite: the statement's current time in a normal process (offset 0).
SQLITE_NOW = sqlite_now(False)


def sqlite_offset(seconds: float) -> str:
    """A SQLite date modifier that adds ``seconds`` (``'+2.500000 seconds'``)."""
    return f"{seconds:+.6f} seconds"


def sqlite_clock() -> str | None:
    """The date modifier that turns SQLite's ``'now'`` in this process into the host's time.

    ``None`` in a normal process (offset 0: use the plain statements); see
    :mod:`ringwork.store.hostclock`.
    """
    offset = hostclock.offset()
    return sqlite_offset(offset) if offset else None


def with_clock(params: dict[str, Any], clock: str | None) -> dict[str, Any]:
    """``params`` for a hand-written SQLite statement's plain (``clock`` None) or skewed
    variant: the skewed one also binds :data:`SQLITE_CLOCK`."""
    if clock is not None:
        params[SQLITE_CLOCK] = clock
    return params


def now_expr(dialect: str, offset: float = 0.0) -> sa.ColumnElement[Any]:
    """The database's current time plus ``offset`` seconds, as a SQL expression.

    On SQLite the process's clock offset is taken when the expression is built: build it for
    the statement about to run, not once for many.
    """
    if dialect == "postgresql":
        if offset:
            return sa.func.now() + sa.literal(timedelta(seconds=offset), sa.Interval)
        return sa.func.now()
    total = hostclock.offset() + offset
    if total:
        return sa.func.strftime(SQLITE_FORMAT, "now", sqlite_offset(total), type_=UTCDateTime)
    return sa.literal_column(SQLITE_NOW, UTCDateTime)


def age_expr(dialect: str, then: sa.ColumnElement[Any]) -> sa.ColumnElement[float]:
    """Seconds from ``then`` to the moment of the read, by the database's clock."""
    if dialect == "postgresql":
        return sa.cast(
            sa.extract("epoch", sa.func.clock_timestamp() - then), sa.Float
        ).label("age")
    clock = sqlite_clock()
    now = sa.func.julianday("now", clock) if clock else sa.func.julianday("now")
    return ((now - sa.func.julianday(then)) * 86400.0).label("age")
