"""The owned partitions' backlog a worker exports (``Store.owned_backlog``): due jobs only,
counted up to a cap, the oldest one's wait by the database's clock, one statement."""

from __future__ import annotations

from typing import Any

from ringwork.job import NewJob
from ringwork.store import Store
from ringwork.store.backlog import owned_backlog
from tests.support import own_all


def test_backlog_counts_due_queued_jobs_of_the_given_partitions(
    store: Store, count_statements: Any
) -> None:
    own_all(store)
    store.enqueue([NewJob(task="t", key=f"a{i}", partition=1) for i in range(3)])
    store.enqueue([NewJob(task="t", key="b", partition=2)])
    store.enqueue([NewJob(task="t", key="later", partition=1, delay=3600)])  # not due
    store.enqueue([NewJob(task="t", key="other", partition=5)])  # not asked for
    [running] = store.claim("node-a", {2: store.read_partitions()[2].epoch}, 1)
    assert running.partition == 2
    with count_statements(store.engine) as log:
        got = store.owned_backlog([1, 2, 3])
    assert log.count == 1
    assert set(got) == {1, 2, 3}
    assert got[1][0] == 3 and got[1][1] is not None and 0.0 <= got[1][1] < 60
    assert got[2] == (0, None)  # its one job runs: not backlog
    assert got[3] == (0, None)
    assert store.owned_backlog([]) == {}


def test_backlog_is_capped_per_partition(store: Store) -> None:
    store.enqueue([NewJob(task="t", key=f"k{i}", partition=0) for i in range(7)])
    with store.engine.connect() as conn:
        got = owned_backlog(conn, store.dialect, store.cluster, [0], cap=5)
    assert got[0][0] == 5 and got[0][1] is not None
