"""The records that cross the store boundary: what is enqueued, what a handler gets, what is read.

They are plain frozen dataclasses so the store, the runtime and tests can pass them around without
touching SQLAlchemy rows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class JobState(str, enum.Enum):
    """Job states (contract). A failed attempt returns to ``queued`` with a later ``run_at``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


#: States in which a job is not finished; dedupe keys and ordered keys are held while in these.
UNFINISHED_STATES = (JobState.QUEUED.value, JobState.RUNNING.value)


@dataclass(frozen=True, kw_only=True)
class NewJob:
    """A job to insert. ``partition`` is computed by the App from ``key``."""

    task: str
    key: str
    partition: int
    payload: Any = None
    priority: int = 0
    run_at: datetime | None = None
    max_attempts: int = 5
    ordered: bool = False
    dedupe_key: str | None = None


@dataclass(frozen=True, kw_only=True)
class Job:
    """What a handler receives (contract: id, key, partition, payload, attempt)."""

    id: int
    task: str
    key: str
    partition: int
    payload: Any
    attempt: int
    max_attempts: int = 5
    # The fencing token the job was claimed with; completions must present it.
    token: int = field(default=0, repr=False)


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    """A job as read back for inspection (``app.get_job``, ``ringwork jobs``)."""

    id: int
    cluster: str
    task: str
    key: str
    partition: int
    payload: Any
    priority: int
    state: str
    run_at: datetime | None
    attempts: int
    max_attempts: int
    ordered: bool
    dedupe_key: str | None
    last_error: str | None
    claimed_by: str | None
    claim_epoch: int | None
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class Outcome(str, enum.Enum):
    """What happened to a completion/failure write."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"  # back to queued with a backed-off run_at
    DEAD = "dead"
    FENCED = "fenced"  # stale token: the write changed nothing
