"""Per-task policy at definition: ``retry=Retry(...)``, ``concurrency=``, ``block_key_on_dead=``.

A bad value is a one-line :class:`ConfigurationError` when the policy or the task is defined,
never at a job; hostile values (NaN, infinities, huge, negative, wrong types) included.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringwork import App, ConfigurationError, Job, Retry
from ringwork.retry import MAX_BACKOFF


def app() -> App:
    return App(database_url="sqlite:///never-opened.db", partitions=4)


def refused(make: Any, *words: str) -> str:
    with pytest.raises(ConfigurationError) as info:
        make()
    text = str(info.value)
    assert "\n" not in text, text
    for word in words:
        assert word in text, text
    return text


# -- Retry: hostile values ---------------------------------------------------------------------

HOSTILE_SECONDS = (
    st.floats(allow_nan=True, allow_infinity=True).filter(
        lambda x: not (math.isfinite(x) and 0 <= x <= MAX_BACKOFF))
    | st.integers().filter(lambda x: not 0 <= x <= MAX_BACKOFF)
    | st.sampled_from([True, False, "1", b"1", [1.0], {"s": 1}, 1j, object()])
)


@settings(deadline=None)
@given(HOSTILE_SECONDS)
def test_a_bad_base_is_refused(value: Any) -> None:
    refused(lambda: Retry(base=value), "Retry", "base")


@settings(deadline=None)
@given(HOSTILE_SECONDS)
def test_a_bad_cap_is_refused(value: Any) -> None:
    refused(lambda: Retry(cap=value), "Retry", "cap")


@settings(deadline=None)
@given(st.floats(min_value=0, max_value=MAX_BACKOFF), st.floats(min_value=0, max_value=MAX_BACKOFF))
def test_cap_below_base_is_refused_and_anything_else_in_range_is_taken(base: float,
                                                                       cap: float) -> None:
    if cap < base:
        refused(lambda: Retry(base=base, cap=cap), "cap", "base")
    else:
        policy = Retry(base=base, cap=cap)
        assert (policy.base, policy.cap) == (base, cap)
        delay = policy.delay(10_000, 1.0, 1.0, random.Random(1))  # huge attempt: no overflow
        assert 0 <= delay <= 1.5 * cap


NOT_EXCEPTIONS = st.sampled_from(
    [int, object, "ValueError", ValueError(), 3, None, [ValueError, "x"], (ValueError, 1),
     {ValueError: 1}, Exception.__init__, type])


@settings(deadline=None)
@given(NOT_EXCEPTIONS, st.sampled_from(["retry_on", "dead_on"]))
def test_exception_lists_hold_exception_classes_only(value: Any, field: str) -> None:
    if value is None:  # None is the default ("not given") for both
        Retry(**{field: value})
        return
    refused(lambda: Retry(**{field: value}), field)


@pytest.mark.parametrize("jitter", [1, 0, "yes", None])
def test_jitter_is_a_bool(jitter: Any) -> None:
    refused(lambda: Retry(jitter=jitter), "jitter")


def test_exception_lists_are_normalised_to_tuples_and_the_policy_is_frozen() -> None:
    policy = Retry(retry_on=[TimeoutError, ConnectionError], dead_on=ValueError, base=1)
    assert policy.retry_on == (TimeoutError, ConnectionError)
    assert policy.dead_on == (ValueError,)
    assert isinstance(policy.base, float)
    assert policy == Retry(retry_on=(TimeoutError, ConnectionError), dead_on=(ValueError,),
                           base=1.0)
    with pytest.raises(AttributeError):
        policy.base = 2.0  # type: ignore[misc]
    hash(policy)


# -- Retry: precedence and delay ---------------------------------------------------------------


def test_dead_on_wins_then_retry_on_then_everything_retries() -> None:
    both = Retry(retry_on=(OSError,), dead_on=(FileNotFoundError,))
    assert not both.retries(FileNotFoundError())  # dead_on wins even inside retry_on
    assert both.retries(ConnectionError())  # an OSError
    assert not both.retries(ValueError())  # retry_on given: the rest dead-letter at once
    only_dead = Retry(dead_on=(ValueError,))
    assert not only_dead.retries(ValueError()) and only_dead.retries(KeyError())
    assert Retry().retries(SystemExit()) and Retry().retries(ValueError())
    assert not Retry(retry_on=()).retries(ValueError())  # retry on nothing


def test_delay_doubles_from_base_up_to_cap_and_jitter_false_is_exact() -> None:
    rng = random.Random(0)
    exact = Retry(base=2.0, cap=10.0, jitter=False)
    assert [exact.delay(n, 99.0, 99.0, rng) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]
    # The worker's settings fill what the policy leaves out.
    assert Retry(jitter=False).delay(3, 0.5, 600.0, rng) == 2.0
    assert Retry(cap=1.0, jitter=False).delay(9, 0.5, 600.0, rng) == 1.0
    jittered = [Retry(base=4.0, cap=4.0).delay(1, 1, 1, rng) for _ in range(200)]
    assert all(2.0 <= d < 6.0 for d in jittered) and len(set(jittered)) > 100


# -- the task's options ------------------------------------------------------------------------


def define(**options: Any) -> App:
    a = app()

    @a.task("t", **options)
    def t(job: Job) -> None: ...

    return a


@settings(deadline=None)
@given(st.integers(max_value=0) | st.integers(min_value=100_001)
       | st.sampled_from([True, False, 1.0, 2.5, "4", math.nan, math.inf, [1]]))
def test_a_bad_task_concurrency_is_refused(value: Any) -> None:
    refused(lambda: define(concurrency=value), "'t'", "concurrency")


def test_task_options_are_kept() -> None:
    policy = Retry(base=0.5, dead_on=(ValueError,))
    task = define(retry=policy, concurrency=3, ordered=True, block_key_on_dead=True).get_task("t")
    assert (task.retry, task.concurrency, task.block_key_on_dead) == (policy, 3, True)
    plain = define().get_task("t")
    assert (plain.retry, plain.concurrency, plain.block_key_on_dead) == (Retry(), None, False)


def test_block_key_on_dead_needs_an_ordered_task() -> None:
    refused(lambda: define(block_key_on_dead=True), "'t'", "block_key_on_dead", "ordered=True")
    refused(lambda: define(ordered=True, block_key_on_dead="yes"), "block_key_on_dead")


@pytest.mark.parametrize("retry", [3, {"base": 1}, "Retry()", Retry])
def test_retry_must_be_a_policy_object(retry: Any) -> None:
    refused(lambda: define(retry=retry), "'t'", "ringwork.Retry")


def test_periodic_tasks_take_the_options_and_their_ticks_carry_the_flag() -> None:
    from datetime import datetime, timezone

    from ringwork.node.cron import due_jobs

    a = app()

    @a.periodic("tick", cron="* * * * *", ordered=True, block_key_on_dead=True, concurrency=1,
                retry=Retry(base=1.0))
    def tick(job: Job) -> None: ...

    assert a.get_task("tick").concurrency == 1
    [schedule] = a.schedules.values()
    last = schedule.dedupe_key(datetime(2025, 12, 31, 23, 59, tzinfo=timezone.utc))
    now = datetime(2026, 1, 1, 0, 0, 30, tzinfo=timezone.utc)
    jobs = due_jobs([schedule], 4, now, {"tick": {"dedupe_key": last}})
    assert jobs and all(j.block_key_on_dead and j.ordered for j in jobs)


def test_jobs_list_marks_the_dead_jobs_that_block_their_key() -> None:
    import io
    from datetime import datetime, timezone

    from rich.console import Console

    from ringwork.console import jobs_table
    from ringwork.job import JobRecord

    def record(job_id: int, block: bool, ordered: bool = True) -> JobRecord:
        now = datetime.now(timezone.utc)
        return JobRecord(id=job_id, cluster="c", task="t", key="k", partition=0, payload=None,
                         priority=0, state="dead", run_at=now, attempts=1, max_attempts=1,
                         ordered=ordered, dedupe_key=None, last_error="boom", claimed_by=None,
                         claim_epoch=None, enqueued_at=now, started_at=now, finished_at=now,
                         block_key_on_dead=block)

    out = io.StringIO()
    jobs_table([record(1, True), record(2, False)], Console(file=out, width=200))
    lines = out.getvalue().splitlines()
    assert "dead (blocks key)" in lines[1] and "blocks" not in lines[2], lines
