"""The ledger alone: where claimed jobs are, and when no claiming round is out."""

from __future__ import annotations

from ringwork.job import Job
from ringwork.worker.ledger import Ledger


def job(job_id: int, partition: int, token: int = 1) -> Job:
    return Job(id=job_id, task="t", key=f"k{job_id}", partition=partition, payload=None,
               attempt=1, token=token)


def test_a_partition_is_quiet_at_once_whatever_its_jobs_are_doing() -> None:
    """Fenced by job: a revocation no longer waits for the partition's jobs to be written."""
    ledger = Ledger()
    quiet: list[frozenset[int]] = []
    a, b = job(1, 0), job(2, 0)
    for j in (a, b):
        ledger.claimed(j)
    ledger.finished(a, None)
    ledger.when_quiet([0, 1], quiet.append)
    assert quiet == [frozenset({0, 1})]
    assert ledger.holds(2) and ledger.completed == [a]


def test_a_claiming_round_out_keeps_its_partitions_from_being_quiet() -> None:
    ledger = Ledger()
    quiet: list[frozenset[int]] = []
    with ledger.flushing([3, 4]):
        ledger.when_quiet([3, 5], quiet.append)
        assert quiet == [frozenset({5})] and not ledger.quiet(3) and not ledger.quiet(4)
        ledger.claimed(job(1, 3))  # what the round brought back, registered before it ends
    assert quiet == [frozenset({5}), frozenset({3})] and ledger.quiet(4)


def test_a_failed_write_puts_outcomes_back_first_in_line() -> None:
    ledger = Ledger()
    a, b = job(1, 2), job(2, 2)
    for j in (a, b):
        ledger.claimed(j)
    ledger.finished(a, None)
    ledger.finished(b, ("ValueError: x", 1.0))
    done = ledger.take_completed()
    failure = ledger.take_failure()
    assert failure is not None and failure[0] is b and failure[1:] == ("ValueError: x", 1.0)
    assert ledger.unwritten_outcomes == 2
    ledger.put_back(completed=done, failed=[failure])
    assert ledger.completed == [a] and ledger.failed == [failure]
    assert sorted(ledger.known_ids()) == [1, 2]
    ledger.written(ledger.take_completed())
    assert ledger.unwritten_outcomes == 1


def test_abandoning_gives_up_every_job_and_ignores_late_outcomes() -> None:
    ledger = Ledger()
    a, b, c = job(1, 0), job(2, 1), job(3, 2)
    for j in (a, b, c):
        ledger.claimed(j)
    ledger.finished(b, None)
    ledger.finished(c, ("E", None))
    assert {j.id for j in ledger.abandon()} == {1, 2, 3}
    assert ledger.stats.abandoned == 3 and not ledger.known_ids()
    assert ledger.finished(a, None) is False  # the handler came back after all: ignored
    assert not ledger.completed
