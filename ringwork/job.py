"""The records that cross the store boundary: what is enqueued, what a handler gets, what is read.

They are plain frozen dataclasses so the store, the runtime and tests can pass them around without
touching SQLAlchemy rows.
"""

from __future__ import annotations

import enum
import json
import json.encoder
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

#: A typed task's payload class (``Job[Resize]``); ``Any`` for a JSON one.
P = TypeVar("P")


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
    """A job to insert. ``partition`` is computed by the App from ``key``.

    When it may run: ``run_at``, an absolute time (the caller's intent, stored as given), or
    ``delay``, seconds after the database's clock at the insert (so the enqueuing process's own
    clock never matters); neither means now, by the database's clock. ``run_at`` wins if both
    are given.
    """

    task: str
    key: str
    partition: int
    payload: Any = None
    priority: int = 0
    run_at: datetime | None = None
    max_attempts: int = 5
    ordered: bool = False
    dedupe_key: str | None = None
    delay: float | None = None
    #: Ordered jobs: dead, the job keeps its key blocked until retried or cancelled.
    block_key_on_dead: bool = False
    #: The W3C trace context of the enqueue, set by the App when tracing is on (docs/tracing.md).
    traceparent: str | None = None

    @classmethod
    def prepared(
        cls,
        task: str,
        key: str,
        partition: int,
        payload: Any,
        payload_json: str,
        priority: int,
        run_at: datetime | None,
        max_attempts: int,
        ordered: bool,
        dedupe_key: str | None,
        delay: float | None = None,
        block_key_on_dead: bool = False,
        traceparent: str | None = None,
    ) -> NewJob:
        """A NewJob that also carries ``payload`` already encoded (``payload_json``).

        For the App's bulk path, which validated the payload by encoding it and hands the job to
        the store at once: the store writes the text instead of encoding the payload again.
        Built without the frozen ``__init__`` (one ``object.__setattr__`` per field, ~3x the
        cost); the fields, equality and repr are those of any NewJob.
        """
        job = object.__new__(cls)
        job.__dict__.update(
            task=task,
            key=key,
            partition=partition,
            payload=payload,
            priority=priority,
            run_at=run_at,
            max_attempts=max_attempts,
            ordered=ordered,
            dedupe_key=dedupe_key,
            delay=delay,
            block_key_on_dead=block_key_on_dead,
            traceparent=traceparent,
            _payload_json=payload_json,
        )
        return job


def encoded_payload(job: NewJob) -> str | None:
    """The payload's JSON text if the job was built :meth:`NewJob.prepared`, else ``None``."""
    text: str | None = job.__dict__.get("_payload_json")
    return text


def payload_encoder() -> Callable[[Any], str]:
    """``json.dumps(payload, separators=(",", ":"))`` minus its per-call set-up (~2 µs).

    Same output and errors (``TypeError`` for an unserialisable value, ``ValueError`` for a
    circular reference). ``json.dumps`` builds a new C encoder on every call; this builds one
    for many payloads. Use one per batch: a failed call can leave the encoder unusable.
    """
    base = json.JSONEncoder(separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (e.g. PyPy): the plain encoder
        return base.encode
    encode = make(
        {}, base.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )

    def encode_payload(payload: Any) -> str:
        return "".join(encode(payload, 0))

    return encode_payload


#: The largest result a ``store_result`` task may return, in bytes of its JSON text.
MAX_RESULT_BYTES = 1_000_000


def encode_result(task: str, value: Any) -> str | None:
    """A handler's return value as the JSON text the store keeps (``None`` for ``None``: no
    result). Raises :class:`~ringwork.errors.ResultError`, in one line, for a value that is not
    JSON or whose text is over :data:`MAX_RESULT_BYTES`. Runs where the handler ran (its thread,
    or the loop for an ``async def`` one), not on the claim path."""
    from ringwork.errors import ResultError

    if value is None:
        return None
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ResultError(f"task {task!r} returned a value that is not JSON: {exc}") from None
    size = len(text.encode())
    if size > MAX_RESULT_BYTES:
        raise ResultError(f"task {task!r} returned a result of {size:,} bytes as JSON; "
                          f"at most {MAX_RESULT_BYTES:,} are stored")
    return text


class CancelFlag:
    """Raised once, never lowered: "stop this attempt" for one claimed job.

    Set on the worker's loop (a cancel noticed, a timeout reached), read by the handler on any
    thread: one attribute, so a read is a single atomic load under the GIL and needs no lock.
    Plain slots, so a :class:`Job` still pickles (claims cross the node-process pipe).
    """

    __slots__ = ("requested",)

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        self.requested = True


@dataclass(frozen=True, kw_only=True)
class Job(Generic[P]):
    """What a handler receives (contract: id, key, partition, payload, attempt,
    cancel_requested). ``Job[Resize]``: a typed task's job, whose ``payload`` is a ``Resize``
    (:mod:`ringwork.payloads`); a plain ``Job``'s payload is the stored JSON value."""

    id: int
    task: str
    key: str
    partition: int
    payload: P
    attempt: int
    max_attempts: int = 5
    # The fencing token the job was claimed with; completions must present it.
    token: int = field(default=0, repr=False)
    # One per attempt; not part of the job's identity (equality, hash).
    cancel_flag: CancelFlag = field(default_factory=CancelFlag, repr=False, compare=False)
    #: The enqueue's W3C trace context (``None``: not traced); the attempt's span is its child.
    traceparent: str | None = field(default=None, repr=False, compare=False)
    #: Seconds this attempt waited in the queue, by the database's clock: from when it became
    #: runnable (its enqueue, or its ``run_at`` if later: a delay, a retry's backoff) to its
    #: claim. ``None`` when the claim did not say (metrics only).
    waited: float | None = field(default=None, repr=False, compare=False)

    @property
    def cancel_requested(self) -> bool:
        """True once this attempt should stop: the job was cancelled (``app.cancel``), or its
        task's ``timeout`` passed. A plain handler that polls it can return early; whatever it
        does then, the attempt's outcome is already decided (cancelled, or timed out). Cheap
        and safe to read from any thread."""
        return self.cancel_flag.requested


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
    #: When a cancel of the job was requested while it ran (``None``: never).
    cancel_requested_at: datetime | None = None
    #: Its task's ``block_key_on_dead``: dead, it keeps its ordered key blocked.
    block_key_on_dead: bool = False
    #: A ``store_result=True`` task's return value, decoded from JSON (``None``: none kept).
    result: Any = None
    #: The W3C trace context its enqueue was traced with (``None``: not traced).
    traceparent: str | None = None

    @property
    def finished(self) -> bool:
        """Succeeded, dead or cancelled: the job will not run again by itself."""
        return self.state in FINISHED


#: The states a job never leaves by itself.
FINISHED = frozenset({JobState.SUCCEEDED.value, JobState.DEAD.value, JobState.CANCELLED.value})


@dataclass(frozen=True, kw_only=True)
class AttemptRecord:
    """One attempt of a job, as its history records it (``app.get_attempts``, ``jobs show``).

    ``outcome``: ``succeeded``; ``failed`` (raised, timed out, or a result the store refused;
    retried or dead by the task's policy); ``cancelled``; ``abandoned`` (its worker handed it
    back: shutdown grace over, or its process died); ``lost`` (its worker stopped reaching the
    cluster and the job was re-queued)."""

    attempt: int
    node: str | None
    epoch: int | None
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str
    error: str | None = None


class Outcome(str, enum.Enum):
    """What happened to a completion/failure write."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"  # back to queued with a backed-off run_at
    DEAD = "dead"
    CANCELLED = "cancelled"  # a cancel was requested: ended, not retried
    FENCED = "fenced"  # stale token: the write changed nothing
