"""Retention's prune statements against the real databases: ages per state, batches, the
database's clock, the registry rows of dead nodes -- and never an unfinished job."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringwork.errors import ConfigurationError
from ringwork.node.registry import SqlRegistry
from ringwork.store import Store
from ringwork.store.schema import JOB_STATES, jobs
from tests.retention_support import age_node, make_jobs, remaining
from tests.support import own_all


def test_each_state_by_its_own_age(store: Store) -> None:
    ids = make_jobs(store, [(s, age) for s in ("succeeded", "cancelled", "dead")
                            for age in (10, 1000)])
    young_s, old_s, young_c, old_c, _young_d, _old_d = ids
    assert store.prune_jobs("succeeded", 100) == 1
    assert remaining(store) == set(ids) - {old_s}
    assert store.prune_jobs("dead", 2000) == 0  # not old enough
    assert store.prune_jobs("dead", 5) == 2
    assert remaining(store) == {young_s, young_c, old_c}
    assert store.prune_jobs("cancelled", 100) == 1


def test_batches_are_bounded_and_oldest_first(store: Store) -> None:
    ids = make_jobs(store, [("succeeded", 1000 + i) for i in range(25)])
    assert store.prune_jobs("succeeded", 100, limit=10) == 10
    assert remaining(store) == set(ids[:15])  # the oldest (the last made) went first
    assert store.prune_jobs("succeeded", 100, limit=10) == 10
    assert store.prune_jobs("succeeded", 100, limit=10) == 5
    assert store.prune_jobs("succeeded", 100, limit=10) == 0


def test_age_is_the_database_clock(store: Store) -> None:
    """finished_at written by the database's clock 50 s ago is 50 s old for the prune."""
    [job] = make_jobs(store, [("succeeded", 50)])
    assert store.prune_jobs("succeeded", 60) == 0
    assert store.prune_jobs("succeeded", 40) == 1
    assert job not in remaining(store)


def test_unfinished_jobs_are_never_pruned(store: Store) -> None:
    own_all(store)
    ids = make_jobs(store, [("queued", 10**6), ("running", 10**6)])  # even with a finished_at
    for state in ("succeeded", "cancelled", "dead"):
        assert store.prune_jobs(state, 0) == 0
    assert remaining(store) == set(ids)
    for state in ("queued", "running", "nonsense"):
        with pytest.raises(ConfigurationError, match="only finished jobs"):
            store.prune_jobs(state, 0)


def test_other_clusters_are_left_alone(store: Store, make_store) -> None:
    other = make_store(cluster=store.cluster + "-other")
    other.open()
    [theirs] = make_jobs(other, [("succeeded", 1000)])
    make_jobs(store, [("succeeded", 1000)])
    assert store.prune_jobs("succeeded", 10) == 1
    assert remaining(other) == {theirs}


AGES = st.sampled_from([5, 50, 500, 5000])


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(st.sampled_from(JOB_STATES), AGES), max_size=12),
    state=st.sampled_from(("succeeded", "cancelled", "dead")),
    older_than=st.sampled_from([0, 25, 250, 2500, 25000]),
    limit=st.integers(1, 5),
)
def test_property_prune_deletes_exactly_the_due(
    store: Store, rows: list[tuple[str, float]], state: str, older_than: float, limit: int
) -> None:
    """Whatever the states and ages: repeated batches delete exactly the jobs of ``state``
    finished longer than ``older_than`` ago, at most ``limit`` per batch, nothing else."""
    with store.engine.begin() as conn:
        conn.execute(sa.delete(jobs).where(jobs.c.cluster == store.cluster))
    ids = make_jobs(store, rows)
    due = {i for i, (s, age) in zip(ids, rows, strict=True) if s == state and age > older_than}
    total = 0
    while True:
        n = store.prune_jobs(state, older_than, limit=limit)
        assert n <= limit
        total += n
        if n == 0:
            break
    assert total == len(due)
    assert remaining(store) == set(ids) - due


def test_prune_nodes_only_long_dead_ones(store: Store) -> None:
    for n in ("dead", "fresh", "owner", "me"):
        store.register_node(n, f"tcp://127.0.0.1:{len(n)}")
    term = store.claim_leadership("me", store.read_term().term)
    assert term is not None
    assert store.assign("me", term, {0: "owner"}) is not None
    for n in ("dead", "owner", "me"):
        age_node(store, n, 7200)
    age_node(store, "fresh", 10)
    # "owner" still owns a partition, "me" is the caller and the term's leader: both stay.
    assert store.prune_nodes(3600, keep="me") == ["dead"]
    assert {n.node_id for n in store.list_nodes()} == {"fresh", "owner", "me"}
    assert store.prune_nodes(3600, keep=None) == []  # the recorded leader stays anyway


def test_a_pruned_node_registers_again_at_its_next_touch(store: Store) -> None:
    registry = SqlRegistry(store, "tcp://127.0.0.1:2", None)
    seq = registry.register("back", "tcp://127.0.0.1:1")
    registry.joined = True
    store.register_node("leader", "tcp://127.0.0.1:9")
    age_node(store, "back", 7200)
    assert store.prune_nodes(3600, keep="leader") == ["back"]
    registry.touch("back")  # the process comes back from a long pause
    [row] = [n for n in store.list_nodes() if n.node_id == "back"]
    assert row.endpoint == "tcp://127.0.0.1:1" and row.pub_endpoint == "tcp://127.0.0.1:2"
    assert row.registered_seq > seq and row.age < 60 and row.joined is True


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_a_batch_is_an_index_probe_in_postgresqls_generic_plan(store: Store) -> None:
    """Our connections run prepared statements with generic plans: a batch must not scan the
    table there. With a bound LIMIT the generic plan hash-joined the sub-select against a
    sequential scan of every row (120 ms a batch with a million finished jobs)."""
    from ringwork.store import retention

    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO ringwork_jobs (cluster, task, key, partition, state, run_at, "
            "enqueued_at, finished_at) SELECT %(c)s, 't', 'k' || i, mod(i, 8), 'succeeded', "
            "now(), now(), now() - interval '2 days' FROM generate_series(1, 50000) AS i",
            {"c": store.cluster},
        )
        conn.exec_driver_sql("ANALYZE ringwork_jobs")

    class Capture:
        def execute(self, stmt: object) -> object:
            self.compiled = stmt.compile(dialect=store.engine.dialect)  # type: ignore[attr-defined]
            raise LookupError

    capture = Capture()
    with pytest.raises(LookupError):
        retention.prune_jobs(capture, "postgresql", store.cluster, "succeeded",  # type: ignore[arg-type]
                             86400, 1000)
    names = list(capture.compiled.params)
    body = str(capture.compiled)
    for i, name in enumerate(names, 1):
        body = body.replace(f"%({name})s", f"${i}")
    args = []
    for name in names:
        value = capture.compiled.params[name]
        args.append(f"interval '{value.total_seconds()} seconds'" if hasattr(value, "days")
                    else "'" + str(value).replace("'", "''") + "'")
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"PREPARE ringwork_prune AS {body}")
        plan = "\n".join(r[0] for r in conn.exec_driver_sql(
            f"EXPLAIN EXECUTE ringwork_prune({', '.join(args)})"))
        conn.exec_driver_sql("DEALLOCATE ringwork_prune")
    # The sub-select picks the batch from the index, the delete reaches each row by its key.
    # Whether the index is walked in order or read as a bitmap depends on the statistics of the
    # shared test database (other tests' rows); neither reads the table, and no join does.
    assert "Index Cond: (id = " in plan and "ix_ringwork_jobs_finished" in plan, plan
    assert "Seq Scan" not in plan and "Hash" not in plan and "Join" not in plan, plan
