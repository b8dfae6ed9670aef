"""In-memory twins of what the worker talks to: the coordinator and the store's job operations.

In the spirit of procrastinate's ``InMemoryConnector`` and dramatiq's stub broker: small, real
implementations (not mocks) that keep the rules the worker relies on, so the pump, the ledger and
the revocation drain can be tested without a database or a socket:

* :class:`MemoryJobs` -- the job operations of :class:`ringwork.store.Store` the worker uses
  (``exchange``, ``claim``, ``complete``, ``fail``, ``release_unknown``, ``abandon``,
  ``cancels_requested``), with the store's
  fencing: a claim takes only jobs of partitions the claimer owns at exactly the epochs it
  presents, and an outcome is written only with the claim token (epoch) the job was claimed with.
* :class:`FixedCoordinator` -- a cluster of one whose assignment a test changes by hand
  (``assign``, ``revoke``, ``lose``); it records every ``revoke_done``. Moving a partition
  bumps its epoch in the jobs twin and re-queues what a dead node still runs there under an
  older epoch, as the referee's ``assign`` does (the jobs of live nodes keep their claims).

Thread-safe (one lock each): the worker calls the jobs twin from its database threads.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ringwork.coordinator import PartitionListener
from ringwork.job import Job, Outcome


@dataclass
class Row:
    id: int
    task: str
    key: str
    partition: int
    payload: Any
    max_attempts: int = 5
    priority: int = 0
    ordered: bool = False
    state: str = "queued"
    attempts: int = 0
    run_at: float = 0.0  # monotonic seconds
    claimed_by: str | None = None
    claim_epoch: int | None = None
    last_error: str | None = None
    cancel_requested: bool = False
    block_key_on_dead: bool = False


class MemoryJobs:
    """The store's job operations in memory, fenced as the SQL ones are."""

    cluster = "twin"
    dialect = "memory"

    def __init__(self, partitions: int = 8) -> None:
        self.partitions = partitions
        self.rows: dict[int, Row] = {}
        #: partition -> (owner, epoch): what a claim is checked against.
        self.owners: dict[int, tuple[str | None, int]] = {p: (None, 0) for p in range(partitions)}
        self.calls: list[str] = []  # the name of every operation, in order
        self.rooms_seen: list[dict[str, int] | None] = []  # each exchange's per-task rooms
        self.dead: set[str] = set()  # nodes declared dead: a move re-queues their jobs
        self.lock = threading.RLock()
        self._ids = itertools.count(1)

    # -- set-up and inspection (the test's side) -----------------------------------------------

    def enqueue(self, task: str, key: str, partition: int, payload: Any = None, *,
                max_attempts: int = 5, ordered: bool = False, priority: int = 0,
                delay: float = 0.0, block_key_on_dead: bool = False) -> int:
        with self.lock:
            row = Row(next(self._ids), task, key, partition, payload, max_attempts, priority,
                      ordered, run_at=time.monotonic() + delay,
                      block_key_on_dead=block_key_on_dead)
            self.rows[row.id] = row
            return row.id

    def request_cancel(self, job_id: int) -> None:
        """What ``store.cancel`` does to a running job: record the request on its row."""
        with self.lock:
            row = self.rows[job_id]
            assert row.state == "running", row
            row.cancel_requested = True

    def retry(self, job_id: int) -> None:
        """What ``store.retry`` does to a dead or cancelled job: queued again, attempts reset."""
        with self.lock:
            row = self.rows[job_id]
            assert row.state in ("dead", "cancelled"), row
            row.state, row.attempts, row.run_at = "queued", 0, time.monotonic()
            row.claimed_by = row.claim_epoch = None
            row.cancel_requested = False

    def state(self, job_id: int) -> str:
        with self.lock:
            return self.rows[job_id].state

    def states(self) -> dict[int, str]:
        with self.lock:
            return {i: r.state for i, r in self.rows.items()}

    def move(self, partitions: Sequence[int], owner: str | None) -> dict[int, int]:
        """Give ``partitions`` to ``owner`` at a new epoch; re-queue what a dead node ran there
        under the old one (fenced by job: the claims of live nodes survive the move)."""
        with self.lock:
            epochs = {}
            for p in partitions:
                epoch = self.owners[p][1] + 1
                self.owners[p] = (owner, epoch)
                epochs[p] = epoch
                for row in self.rows.values():
                    if (row.partition == p and row.state == "running"
                            and row.claimed_by in self.dead
                            and (row.claim_epoch or 0) < epoch):
                        exhausted = row.attempts >= row.max_attempts
                        row.state = ("cancelled" if row.cancel_requested
                                     else "dead" if exhausted else "queued")
                        if row.state == "queued":
                            row.claimed_by = row.claim_epoch = None
            return epochs

    # -- what the worker calls ------------------------------------------------------------------

    def claim(self, node_id: str, owned: Mapping[int, int], limit: int,
              rooms: Mapping[str, int] | None = None) -> list[Job]:
        with self.lock:
            self.calls.append("claim")
            return self._claim(node_id, owned, limit, rooms)

    def complete(self, node_id: str, done: Sequence[tuple[int, int]]) -> list[int]:
        with self.lock:
            self.calls.append("complete")
            return self._complete(node_id, done)

    def exchange(self, node_id: str, done: Sequence[tuple[int, int]],
                 owned: Mapping[int, int], limit: int,
                 rooms: Mapping[str, int] | None = None,
                 results: Mapping[int, str] | None = None) -> tuple[list[int], list[Job]]:
        with self.lock:
            self.calls.append("exchange")
            self.rooms_seen.append(None if rooms is None else dict(rooms))
            return self._complete(node_id, done), self._claim(node_id, owned, limit, rooms)

    def fail(self, node_id: str, job_id: int, token: int, error: str, *,
             retry_delay: float | None, cancelled: bool = False) -> Outcome:
        with self.lock:
            self.calls.append("cancelled" if cancelled else "fail")
            row = self.rows.get(job_id)
            if not self._holds(row, node_id, token):
                return Outcome.FENCED
            assert row is not None
            row.last_error = error
            if cancelled or row.cancel_requested:
                row.state = "cancelled"
                return Outcome.CANCELLED
            if retry_delay is not None and row.attempts < row.max_attempts:
                row.state, row.claimed_by = "queued", None
                row.run_at = time.monotonic() + retry_delay
                return Outcome.RETRY
            row.state = "dead"
            return Outcome.DEAD

    def cancels_requested(self, ids: Sequence[int]) -> list[int]:
        with self.lock:
            self.calls.append("cancels_requested")
            return [i for i in ids if (row := self.rows.get(i)) is not None
                    and row.state == "running" and row.cancel_requested]

    def release_unknown(self, node_id: str, known: Sequence[int]) -> list[int]:
        with self.lock:
            self.calls.append("release_unknown")
            released = []
            for row in self.rows.values():
                if row.state == "running" and row.claimed_by == node_id and row.id not in known:
                    row.state, row.claimed_by, row.claim_epoch = "queued", None, None
                    row.attempts -= 1
                    released.append(row.id)
            return released

    def abandon(self, node_id: str, claims: Sequence[tuple[int, int]]) -> list[int]:
        with self.lock:
            self.calls.append("abandon")
            written = []
            for job_id, token in claims:
                row = self.rows.get(job_id)
                if self._holds(row, node_id, token):
                    assert row is not None
                    row.last_error = f"abandoned at shutdown after the grace period ({node_id})"
                    exhausted = row.attempts >= row.max_attempts
                    row.state = ("cancelled" if row.cancel_requested
                                 else "dead" if exhausted else "queued")
                    if row.state == "queued":
                        row.claimed_by = row.claim_epoch = None
                    written.append(job_id)
            return written

    # -- the rules --------------------------------------------------------------------------------

    def _holds(self, row: Row | None, node_id: str, token: int) -> bool:
        return (row is not None and row.state == "running" and row.claimed_by == node_id
                and row.claim_epoch == token)

    def _complete(self, node_id: str, done: Sequence[tuple[int, int]]) -> list[int]:
        fenced = []
        for job_id, token in done:
            row = self.rows.get(job_id)
            if self._holds(row, node_id, token):
                assert row is not None
                row.state = "succeeded"
            else:
                fenced.append(job_id)
        return fenced

    def _claim(self, node_id: str, owned: Mapping[int, int], limit: int,
               rooms: Mapping[str, int] | None = None) -> list[Job]:
        if limit <= 0 or not owned:
            return []
        left = dict(rooms or {})
        now = time.monotonic()
        mine = {p: e for p, e in owned.items() if self.owners.get(p) == (node_id, e)}
        busy_keys = {(r.task, r.key) for r in self.rows.values()
                     if r.ordered and r.state == "running"}
        candidates = sorted(
            (r for r in self.rows.values()
             if r.state == "queued" and r.partition in mine and r.run_at <= now),
            key=lambda r: (-r.priority, r.id),
        )
        claimed: list[Job] = []
        for row in candidates:
            if len(claimed) == limit:
                break
            if row.task in left and left[row.task] <= 0:
                continue  # its task is at its concurrency limit in this worker
            if row.ordered:
                head = min(i for i, r in self.rows.items() if r.task == row.task
                           and r.key == row.key and (r.state in ("queued", "running")
                                                     or (r.state == "dead"
                                                         and r.block_key_on_dead)))
                if (row.task, row.key) in busy_keys or head != row.id:
                    continue
                busy_keys.add((row.task, row.key))
            if row.task in left:
                left[row.task] -= 1
            row.state, row.claimed_by, row.claim_epoch = "running", node_id, mine[row.partition]
            row.attempts += 1
            claimed.append(Job(id=row.id, task=row.task, key=row.key, partition=row.partition,
                               payload=row.payload, attempt=row.attempts,
                               max_attempts=row.max_attempts, token=mine[row.partition]))
        return claimed


class FixedCoordinator:
    """A cluster of one with a hand-set assignment (the worker's ``Coordinator``).

    ``assign``/``revoke``/``lose`` change it and tell the worker, as the node does; every
    ``revoke_done`` is recorded in :attr:`confirmed`. With ``jobs`` given, ownership is also
    written there (epoch bumps fence the old owner), so claims and outcomes are checked.
    """

    def __init__(self, jobs: MemoryJobs | None = None, node_id: str = "node-a",
                 epochs: Mapping[int, int] | None = None) -> None:
        self.node_id = node_id
        self.jobs = jobs
        self.held: dict[int, int] = dict(epochs or {})
        self.listener: PartitionListener | None = None
        self.confirmed: list[frozenset[int]] = []
        self.started = threading.Event()
        self.left = False
        self.stopped = False
        self.failed: str | None = None
        self.lock = threading.Lock()

    # -- the test's side -------------------------------------------------------------------------

    def assign(self, partitions: Sequence[int]) -> None:
        epochs = (self.jobs.move(partitions, self.node_id) if self.jobs is not None
                  else {p: self.held.get(p, 0) + 1 for p in partitions})
        with self.lock:
            self.held.update(epochs)
        self._tell("assigned", partitions)

    def revoke(self, partitions: Sequence[int]) -> None:
        """Stop our claims on ``partitions`` and ask the worker to drain them."""
        with self.lock:
            for p in partitions:
                self.held.pop(p, None)
        self._tell("revoked", partitions)

    def lose(self, partitions: Sequence[int], to: str = "node-b", *, dead: bool = False) -> None:
        """Taken without a hand-off: another node owns them at a new epoch. ``dead``: we were
        declared dead too, so the move re-queues the jobs we still run there."""
        with self.lock:
            for p in partitions:
                self.held.pop(p, None)
        if self.jobs is not None:
            if dead:
                self.jobs.dead.add(self.node_id)
            self.jobs.move(partitions, to)
        self._tell("lost", partitions)

    def confirmed_partitions(self) -> set[int]:
        with self.lock:
            return set().union(*self.confirmed) if self.confirmed else set()

    def _tell(self, kind: str, partitions: Sequence[int]) -> None:
        assert self.listener is not None, "the worker has not started the coordinator"
        self.listener(kind, frozenset(partitions))

    # -- the Coordinator protocol ---------------------------------------------------------------

    def start(self, listener: PartitionListener, wake_endpoint: str | None) -> None:
        self.listener = listener
        self.started.set()

    def claimable(self) -> Mapping[int, int]:
        with self.lock:
            return dict(self.held)

    def revoke_done(self, partitions: frozenset[int]) -> None:
        with self.lock:
            self.confirmed.append(partitions)

    def begin_leave(self) -> None:
        self.left = True
        with self.lock:
            held, self.held = set(self.held), {}
        if held:
            self._tell("revoked", sorted(held))

    def stop(self) -> None:
        self.stopped = True

    def failure(self) -> str | None:
        return self.failed


class WorkerParts:
    """The worker's parts wired as :class:`ringwork.worker.Worker` wires them, minus the
    sockets: the pump writes to a :class:`MemoryJobs`, ownership comes from a
    :class:`FixedCoordinator`. For unit tests, inside one ``asyncio.run``."""

    def __init__(self, app: Any, jobs: MemoryJobs, coordinator: FixedCoordinator) -> None:
        from ringwork.worker.cancels import CancelWatch
        from ringwork.worker.database import Database
        from ringwork.worker.executor import Callbacks, Executor
        from ringwork.worker.ledger import Ledger
        from ringwork.worker.ownership import Ownership
        from ringwork.worker.pump import Pump
        from ringwork.worker.wakeups import Wakeups

        s, node = app.settings, coordinator.node_id
        self.jobs, self.coordinator = jobs, coordinator
        self.ledger = Ledger()
        self.stats = self.ledger.stats
        self.wakeups = Wakeups(node, s.db_backoff_max)
        self.db = Database(node, s.db_backoff_max)
        self.callbacks = Callbacks(app, node)
        self.ownership = Ownership(coordinator, self.ledger, self.wakeups, self.callbacks)
        self.executor = Executor(app, s, node, on_outcome=lambda job, verdict: None)
        self.pump = Pump(app, s, coordinator, jobs, self.ledger, self.ownership, self.executor,
                         self.wakeups, self.db)
        self.executor.on_outcome = self.pump.outcome
        self.executor.on_freed = self.pump.slot_freed
        self.cancels = CancelWatch(node, jobs, self.executor, self.db, interval=0.05)
        self._task: Any = None

    async def start(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        self.ownership.bind(loop)
        self.coordinator.start(self.ownership.listener, None)
        self._task = asyncio.create_task(self.pump.run())
        self.cancels.start()

    async def stop(self, leave: bool = True) -> None:
        """What a stop does: leave (revoke everything), let the pump finish, close."""
        if leave:
            self.coordinator.begin_leave()
        self.pump.begin_stop()
        await self._task
        await self.cancels.close()
        await self.callbacks.drain(1.0)
        self.executor.close()
        self.db.close()


async def until(condition: Any, timeout: float = 5.0, message: str = "condition") -> Any:
    """``tests.support.wait_for`` for code on the event loop: the loop keeps running."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(0.005)
    return value
