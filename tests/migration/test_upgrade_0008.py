"""Upgrading a 0006 database that holds jobs to head -- 0007 (the nodes' concurrency and version)
and 0008 (the jobs' ``traceparent``): every job and
every value survives, old jobs read ``NULL`` (no trace) and are claimed and completed as before,
and new jobs keep the context they were enqueued with."""

from __future__ import annotations

import sqlalchemy as sa

from ringwork.job import NewJob
from ringwork.store import Store
from ringwork.store.engine import create_engine
from ringwork.store.migrate import current, head, upgrade
from tests.migration.old_schema import THEN, at_revision, job_rows, move_id_sequence

CLUSTER = "old7"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STATES = ["queued", "running", "succeeded", "dead", "cancelled"]


def _fill_0006(url: str) -> None:
    engine = create_engine(url)
    try:
        at_revision(engine, "0006", CLUSTER, 2)
        with engine.begin() as conn:
            for i, state in enumerate(STATES, 1):
                ran = state != "queued"
                conn.execute(sa.text(
                    "INSERT INTO ringwork_jobs (id, cluster, task, \"key\", \"partition\","
                    " payload, priority, state, run_at, attempts, max_attempts, ordered,"
                    " claimed_by, claim_epoch, enqueued_at, started_at, block_key_on_dead)"
                    " VALUES (:id, :c, 't', :key, 0, :payload, 0, :state, :now, :attempts, 5,"
                    " false, :by, :epoch, :now, :started, false)"),
                    {"id": i, "c": CLUSTER, "key": f"k{i}", "payload": f'{{"n": {i}}}',
                     "state": state, "now": THEN, "attempts": 1 if ran else 0,
                     "by": "n1" if ran else None, "epoch": 1 if ran else None,
                     "started": THEN if ran else None})
            move_id_sequence(conn)
    finally:
        engine.dispose()


def test_upgrade_from_0006_keeps_every_job(empty_db_url: str) -> None:
    _fill_0006(empty_db_url)
    assert current(empty_db_url) == "0006"
    before = job_rows(empty_db_url)
    assert [r["state"] for r in before] == STATES

    assert upgrade(empty_db_url) == head() == "0008"
    after = job_rows(empty_db_url)
    assert [{k: v for k, v in r.items() if k != "traceparent"} for r in after] == before
    assert all(r["traceparent"] is None for r in after)

    with Store(empty_db_url, cluster=CLUSTER, partitions=2) as store:
        assert store.complete("n1", [(2, 1)]) == []  # the running one, under its old claim
        done = store.get_job(2)
        assert done is not None and done.state == "succeeded"
        [old] = store.claim("n1", {0: 1, 1: 1}, 10)
        assert (old.id, old.traceparent) == (1, None)
        [new_id] = store.enqueue([NewJob(task="t", key="k", partition=0,
                                         traceparent=TRACEPARENT)])
        [new] = store.claim("n1", {0: 1, 1: 1}, 10)
        assert (new.id, new.traceparent) == (new_id, TRACEPARENT)
