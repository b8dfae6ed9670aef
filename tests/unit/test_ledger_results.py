"""A result waits in the ledger with its completed job: through a failed round, until written."""

from __future__ import annotations

from ringwork.job import Job
from ringwork.worker.ledger import Ledger, Stored


def job(i: int) -> Job:
    return Job(id=i, task="t", key="k", partition=0, payload=None, attempt=1)


def test_results_wait_with_their_jobs_until_the_completion_is_written() -> None:
    ledger = Ledger()
    a, b = job(1), job(2)
    ledger.claimed(a)
    ledger.claimed(b)
    assert ledger.finished(a, Stored('{"x":1}'))
    assert ledger.finished(b, None)
    done = ledger.take_completed()
    assert done == [a, b]
    assert ledger.results_of(done) == {1: '{"x":1}'}
    ledger.put_back(completed=done)  # the round failed: the result is still there
    done = ledger.take_completed()
    assert ledger.results_of(done) == {1: '{"x":1}'}
    ledger.written(done)
    assert ledger.results == {} and ledger.results_of(done) is None


def test_no_results_costs_nothing_and_abandon_drops_them() -> None:
    ledger = Ledger()
    a = job(1)
    ledger.claimed(a)
    ledger.finished(a, None)
    done = ledger.take_completed()
    assert ledger.results_of(done) is None
    ledger.written(done)
    b = job(2)
    ledger.claimed(b)
    ledger.finished(b, Stored("1"))
    ledger.abandon()
    assert ledger.results == {}
