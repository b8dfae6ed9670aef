"""Per-task policy in the store, on SQLite and PostgreSQL: the claim's per-task rooms
(``concurrency=``) and dead jobs that keep their ordered key blocked (``block_key_on_dead``)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from ringwork.errors import InvalidJobState
from ringwork.job import NewJob, Outcome
from ringwork.store import Store
from tests.support import own_all

NODE = "node-a"


def new(task: str, key: str, partition: int = 0, **kw: object) -> NewJob:
    return NewJob(task=task, key=key, partition=partition, **kw)  # type: ignore[arg-type]


def tasks_of(jobs: list) -> Counter[str]:  # type: ignore[type-arg]
    return Counter(j.task for j in jobs)


# -- concurrency=: the claim's rooms -----------------------------------------------------------


def test_the_claim_takes_no_more_of_a_limited_task_than_its_room(store: Store) -> None:
    epochs = own_all(store, NODE)
    store.enqueue([new("a", f"a{i}", i % 8) for i in range(10)]
                  + [new("b", f"b{i}", i % 8) for i in range(10)])
    got = store.claim(NODE, epochs, 8, rooms={"a": 1})
    assert tasks_of(got) == {"a": 1, "b": 7}
    got = store.claim(NODE, epochs, 8, rooms={"a": 0})
    assert tasks_of(got) == {"b": 3}  # a is full: none of it, whatever the room left
    got = store.claim(NODE, epochs, 8, rooms={"a": 2, "b": 0})
    assert tasks_of(got) == {"a": 2}


def test_a_limited_task_ahead_in_the_queue_does_not_starve_the_others(store: Store) -> None:
    """Its jobs fill every candidate of the first statement; a second one, with the task
    counted full, claims the rest of the batch in the same call."""
    epochs = own_all(store, NODE)
    store.enqueue([new("a", f"a{i}", 0) for i in range(50)])
    store.enqueue([new("b", f"b{i}", 0) for i in range(10)])
    got = store.claim(NODE, epochs, 8, rooms={"a": 2})
    assert tasks_of(got) == {"a": 2, "b": 6}
    fenced, got = store.exchange(NODE, [(j.id, j.token) for j in got], epochs, 8,
                                 rooms={"a": 2})
    assert fenced == [] and tasks_of(got) == {"a": 2, "b": 4}


def test_priority_order_holds_under_rooms(store: Store) -> None:
    epochs = own_all(store, NODE)
    store.enqueue([new("a", "a-low", 1, priority=0), new("a", "a-high", 2, priority=5),
                   new("b", "b", 3, priority=1)])
    got = store.claim(NODE, epochs, 3, rooms={"a": 1})
    assert [j.key for j in got] == ["a-high", "b"]


def test_the_async_claimer_takes_rooms_too(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("the claim on the event loop is PostgreSQL's")
    epochs = own_all(store, NODE)
    store.enqueue([new("a", f"a{i}", 0) for i in range(30)] + [new("b", "b", 1)])
    claimer = store.claimer()
    assert claimer is not None

    async def claim() -> list:  # type: ignore[type-arg]
        try:
            return await claimer.claim(NODE, epochs, 4, rooms={"a": 1})
        finally:
            await claimer.close()

    assert tasks_of(asyncio.run(claim())) == {"a": 1, "b": 1}


# -- block_key_on_dead: a dead job holds its ordered key ---------------------------------------


def blocking(key: str = "k", partition: int = 0, **kw: object) -> NewJob:
    return new("o", key, partition, ordered=True, block_key_on_dead=True, max_attempts=1, **kw)


def run_and_kill(store: Store, epochs: dict[int, int]) -> int:
    [head] = store.claim(NODE, epochs, 10)
    assert store.fail(NODE, head.id, head.token, "RuntimeError: boom",
                      retry_delay=None) is Outcome.DEAD
    return head.id


def test_a_dead_blocking_job_holds_its_key_until_retried(store: Store) -> None:
    epochs = own_all(store, NODE)
    first, second = store.enqueue([blocking(), blocking()])
    rec = store.get_job(first)
    assert rec is not None and rec.block_key_on_dead and rec.ordered
    assert run_and_kill(store, epochs) == first
    [other] = store.enqueue([blocking("other")])
    assert [j.id for j in store.claim(NODE, epochs, 10)] == [other]  # not ``second``
    store.retry(first)
    [again] = store.claim(NODE, epochs, 10)
    assert again.id == first and again.attempt == 1  # the head first, attempts reset
    fenced, after = store.exchange(NODE, [(again.id, again.token)], epochs, 10)
    assert fenced == [] and [j.id for j in after] == [second]


def test_cancelling_the_dead_blocker_releases_its_key(store: Store) -> None:
    epochs = own_all(store, NODE)
    first, second = store.enqueue([blocking(), blocking()])
    run_and_kill(store, epochs)
    assert store.claim(NODE, epochs, 10) == []
    assert store.cancel(first) == "cancelled"
    rec = store.get_job(first)
    assert rec is not None and rec.state == "cancelled" and rec.last_error == "RuntimeError: boom"
    assert [j.id for j in store.claim(NODE, epochs, 10)] == [second]


def test_a_dead_job_without_the_flag_neither_blocks_nor_can_be_cancelled(store: Store) -> None:
    epochs = own_all(store, NODE)
    first, second = store.enqueue([new("o", "k", ordered=True, max_attempts=1),
                                   new("o", "k", ordered=True, max_attempts=1)])
    [head] = store.claim(NODE, epochs, 10)
    store.fail(NODE, head.id, head.token, "boom", retry_delay=None)
    assert [j.id for j in store.claim(NODE, epochs, 10)] == [second]
    with pytest.raises(InvalidJobState, match="dead"):
        store.cancel(first)


def test_a_last_attempt_handed_back_blocks_its_key_too(store: Store) -> None:
    """The flag is on the row, so every way to ``dead`` holds the key: here the back-to-queue
    rule that a stop's hand-back and the referee's re-queue of a lost worker's jobs share
    (neither knows anything of tasks)."""
    epochs = own_all(store, NODE)
    first, second = store.enqueue([blocking(), blocking()])
    [head] = store.claim(NODE, epochs, 10)
    assert head.id == first
    assert store.abandon(NODE, [(head.id, head.token)]) == [first]
    rec = store.get_job(first)
    assert rec is not None and rec.state == "dead"
    assert store.claim(NODE, epochs, 10) == []
    store.retry(first)
    assert [j.id for j in store.claim(NODE, epochs, 10)] == [first]  # not ``second``
    assert store.get_job(second).state == "queued"  # type: ignore[union-attr]


def test_rooms_hold_in_sqlites_wide_claim_too(store: Store, monkeypatch: pytest.MonkeyPatch,
                                             ) -> None:
    """Beyond MERGE_MAX_PARTITIONS owned partitions SQLite claims with one correlated scan per
    partition; the rooms apply there as well (PostgreSQL has one form only)."""
    from ringwork.store import claim_sqlite

    monkeypatch.setattr(claim_sqlite, "MERGE_MAX_PARTITIONS", 2)
    claim_sqlite.claim_sqlite.cache_clear()
    try:
        epochs = own_all(store, NODE)
        store.enqueue([new("a", f"a{i}", i % 8) for i in range(40)]
                      + [new("b", f"b{i}", i % 8) for i in range(10)])
        got = store.claim(NODE, epochs, 8, rooms={"a": 1})
        assert tasks_of(got) == {"a": 1, "b": 7}
        assert tasks_of(store.claim(NODE, epochs, 8, rooms={"a": 0})) == {"b": 3}
    finally:
        claim_sqlite.claim_sqlite.cache_clear()


@pytest.mark.parametrize("name", ['qu"o\'te', "é,{x}", "back\\slash", "NULL", ""])
def test_rooms_take_any_task_name(store: Store, name: str) -> None:
    """Task names travel as bound JSON / arrays, never spliced into SQL."""
    epochs = own_all(store, NODE)
    store.enqueue([new(name, f"a{i}", i % 8) for i in range(5)] + [new("b", "b", 1)])
    assert tasks_of(store.claim(NODE, epochs, 8, rooms={name: 2})) == {name: 2, "b": 1}
    assert tasks_of(store.claim(NODE, epochs, 8, rooms={name: 0})) == {}


def test_status_names_the_keys_a_dead_job_blocks(store: Store) -> None:
    epochs = own_all(store, NODE)
    first, _ = store.enqueue([blocking(), blocking()])
    assert store.blocked_keys() == []
    run_and_kill(store, epochs)  # ``first``: the head of "k"
    store.enqueue([new("o", "p", ordered=True, max_attempts=1)])
    [p] = store.claim(NODE, epochs, 10)
    store.fail(NODE, p.id, p.token, "boom", retry_delay=None)  # dead, blocks nothing
    assert store.blocked_keys() == [("o", "k", first)]
    assert store.blocked_keys(limit=0) == [("o", "k", first)]  # limit + 1: "there are more"
    store.retry(first)
    assert store.blocked_keys() == []


def test_ringwork_status_shows_the_blocked_keys(store: Store) -> None:
    import io

    from rich.console import Console

    from ringwork import App
    from ringwork.console import status_view
    from ringwork.status import collect

    epochs = own_all(store, NODE)
    first, _ = store.enqueue([blocking(), blocking()])
    run_and_kill(store, epochs)
    app = App(store.url, partitions=store.partitions, cluster=store.cluster)
    try:
        doc = collect(app)
    finally:
        app.close()
    assert doc["blocked_keys"] == [{"task": "o", "key": "k", "job": first}]
    assert doc["blocked_keys_more"] is False
    out = io.StringIO()
    Console(file=out, width=200).print(status_view(doc))
    assert f"keys blocked by a dead job (retry or cancel it): o/k (job {first})" in out.getvalue()


def test_the_flag_survives_every_enqueue_path(store: Store) -> None:
    """One job (one INSERT), a batch with dedupe keys (INSERT .. ON CONFLICT) and a big batch
    (PostgreSQL: COPY) all write the flag."""
    [one] = store.enqueue([blocking("one")])
    deduped = store.enqueue([blocking(f"d{i}", dedupe_key=f"d{i}") for i in range(3)])
    bulk = store.enqueue([blocking(f"b{i}", i % 8) for i in range(100)]
                         + [new("o", f"plain{i}", ordered=True) for i in range(2)])
    for job_id in (one, *deduped, *bulk[:100]):
        rec = store.get_job(job_id)
        assert rec is not None and rec.block_key_on_dead and rec.ordered, job_id
    for job_id in bulk[100:]:
        rec = store.get_job(job_id)
        assert rec is not None and not rec.block_key_on_dead
