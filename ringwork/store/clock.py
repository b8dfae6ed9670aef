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
* SQLite: the clock of the host the file lives on, read by SQLite in the statement
  (``'now'``, the same value for the whole statement). Every process that opens one SQLite
  file runs on that host, so they all read the one kernel clock. Stored as text in exactly
  the format SQLAlchemy's SQLite ``DATETIME`` writes (``YYYY-MM-DD HH:MM:SS.ffffff``), so
  values written from Python (a user's absolute ``run_at``) and by SQL compare correctly as
  text; SQLite's clock has millisecond resolution, hence the three zero digits.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from ringwork.store.schema import UTCDateTime

#: strftime format of a SQLite timestamp (the text SQLAlchemy's DATETIME stores).
SQLITE_FORMAT = "%Y-%m-%d %H:%M:%f000"
#: SQLite: the statement's current time, as stored text. For hand-written statements.
SQLITE_NOW = f"strftime('{SQLITE_FORMAT}', 'now')"


def sqlite_offset(seconds: float) -> str:
    """A SQLite date modifier that adds ``seconds`` (``'+2.500000 seconds'``)."""
    return f"{seconds:+.6f} seconds"


def now_expr(dialect: str, offset: float = 0.0) -> sa.ColumnElement[Any]:
    """The database's current time plus ``offset`` seconds, as a SQL expression."""
    if dialect == "postgresql":
        if offset:
            return sa.func.now() + sa.literal(timedelta(seconds=offset), sa.Interval)
        return sa.func.now()
    if offset:
        return sa.func.strftime(SQLITE_FORMAT, "now", sqlite_offset(offset), type_=UTCDateTime)
    return sa.literal_column(SQLITE_NOW, UTCDateTime)


def age_expr(dialect: str, then: sa.ColumnElement[Any]) -> sa.ColumnElement[float]:
    """Seconds from ``then`` to the moment of the read, by the database's clock."""
    if dialect == "postgresql":
        return sa.cast(
            sa.extract("epoch", sa.func.clock_timestamp() - then), sa.Float
        ).label("age")
    return ((sa.func.julianday("now") - sa.func.julianday(then)) * 86400.0).label("age")
