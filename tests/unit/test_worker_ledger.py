"""The ledger alone: every place a claimed job can be counts as unwritten for its partition."""

from __future__ import annotations

from ringwork.job import Job
from ringwork.worker.ledger import Ledger


def job(job_id: int, partition: int, token: int = 1) -> Job:
    return Job(id=job_id, task="t", key=f"k{job_id}", partition=partition, payload=None,
               attempt=1, token=token)


def test_a_job_is_unwritten_in_every_place_until_its_outcome_is_written() -> None:
    ledger = Ledger()
    clean: list[frozenset[int]] = []
    a = job(1, 0)
    ledger.claimed(a)
    ledger.when_clean([0, 1], clean.append)
    assert clean == [frozenset({1})]  # nothing of partition 1: clean at once
    for step in (lambda: ledger.finished(a, None), ledger.take_completed):
        step()
        assert ledger.unwritten(0) and clean == [frozenset({1})]
    ledger.written([a])
    assert not ledger.unwritten(0)
    assert clean == [frozenset({1}), frozenset({0})]


def test_a_failed_write_puts_outcomes_back_and_they_stay_unwritten() -> None:
    ledger = Ledger()
    clean: list[frozenset[int]] = []
    a, b = job(1, 2), job(2, 2)
    for j in (a, b):
        ledger.claimed(j)
    ledger.finished(a, None)
    ledger.finished(b, ("ValueError: x", 1.0))
    ledger.when_clean([2], clean.append)
    done = ledger.take_completed()
    failure = ledger.take_failure()
    assert failure is not None and failure[0] is b and failure[1:] == ("ValueError: x", 1.0)
    ledger.put_back(completed=done, failed=[failure])
    assert ledger.completed == [a] and ledger.failed == [failure] and not clean
    assert sorted(ledger.known_ids()) == [1, 2]
    ledger.written(ledger.take_completed())
    ledger.take_failure()
    assert not clean
    ledger.written([b])
    assert clean == [frozenset({2})]


def test_a_claiming_round_out_keeps_its_partitions_unwritten() -> None:
    ledger = Ledger()
    clean: list[frozenset[int]] = []
    with ledger.flushing([3, 4]):
        ledger.when_clean([3], clean.append)
        assert ledger.unwritten(3) and ledger.unwritten(4) and not clean
        ledger.claimed(job(1, 3))  # what the round brought back, registered before it ends
    assert not clean and ledger.unwritten(3) and not ledger.unwritten(4)


def test_outcomes_of_a_lost_partition_are_dropped_never_written() -> None:
    ledger = Ledger()
    clean: list[frozenset[int]] = []
    done, running, later = job(1, 5, token=3), job(2, 5, token=3), job(3, 5, token=4)
    for j in (done, running):
        ledger.claimed(j)
    ledger.finished(done, None)
    ledger.when_clean([5], clean.append)
    ledger.lose(frozenset({5}))
    assert ledger.completed == [] and ledger.stats.dropped == 1 and not clean
    ledger.finished(running, None)
    assert ledger.completed == []
    assert ledger.stats.dropped == 2 and clean == [frozenset({5})]
    ledger.regained(frozenset({5}))  # ours again at a newer epoch: its jobs count again
    ledger.claimed(later)
    ledger.finished(later, None)
    assert ledger.completed == [later]


def test_abandoning_makes_every_partition_clean_and_ignores_late_outcomes() -> None:
    ledger = Ledger()
    clean: list[frozenset[int]] = []
    a, b, c = job(1, 0), job(2, 1), job(3, 2)
    for j in (a, b, c):
        ledger.claimed(j)
    ledger.finished(b, None)
    ledger.finished(c, ("E", None))
    ledger.when_clean([0, 1, 2], clean.append)
    assert {j.id for j in ledger.abandon()} == {1, 2, 3}
    assert clean == [frozenset({0, 1, 2})] and ledger.stats.abandoned == 3
    assert ledger.finished(a, None) is False  # the handler came back after all: ignored
    assert not ledger.completed and not ledger.unwritten(0)
