"""Upgrading a database of the previous schema (0004) that holds jobs, to 0006 (results and
attempts): every job and every column value survives, and the jobs carry on under the new
release (a running job completes under its old claim, with a history row)."""

from __future__ import annotations

import sqlalchemy as sa

from ringwork.store import Store
from ringwork.store.engine import create_engine
from ringwork.store.migrate import current, upgrade
from ringwork.store.schema import HEAD_REVISION
from tests.migration.old_schema import THEN, at_revision, job_rows, move_id_sequence

CLUSTER = "old"

#: Jobs as the previous release left them, one per state (columns of revision 0004).
OLD_JOBS = [
    {"id": 1, "state": "queued", "attempts": 0, "claimed_by": None, "claim_epoch": None,
     "last_error": None, "finished": False},
    {"id": 2, "state": "running", "attempts": 1, "claimed_by": "n1", "claim_epoch": 1,
     "last_error": None, "finished": False},
    {"id": 3, "state": "succeeded", "attempts": 1, "claimed_by": "n1", "claim_epoch": 1,
     "last_error": None, "finished": True},
    {"id": 4, "state": "dead", "attempts": 5, "claimed_by": "n1", "claim_epoch": 1,
     "last_error": "ValueError: x", "finished": True},
    {"id": 5, "state": "cancelled", "attempts": 0, "claimed_by": None, "claim_epoch": None,
     "last_error": None, "finished": True},
]


def _fill_0004(url: str) -> None:
    engine = create_engine(url)
    try:
        at_revision(engine, "0004", CLUSTER, 4)
        with engine.begin() as conn:
            for job in OLD_JOBS:
                conn.execute(sa.text(
                    "INSERT INTO ringwork_jobs (id, cluster, task, \"key\", \"partition\","
                    " payload, priority, state, run_at, attempts, max_attempts, ordered,"
                    " last_error, claimed_by, claim_epoch, enqueued_at, started_at,"
                    " finished_at) VALUES (:id, :c, 't', :key, 0, :payload, 0, :state, :now,"
                    " :attempts, 5, false, :last_error, :claimed_by, :claim_epoch, :now,"
                    " :started, :finished_at)"),
                    {**job, "c": CLUSTER, "key": f"k{job['id']}", "now": THEN,
                     "payload": f'{{"n": {job["id"]}}}',
                     "started": THEN if job["attempts"] else None,
                     "finished_at": THEN if job["finished"] else None})
            move_id_sequence(conn)
    finally:
        engine.dispose()


def test_upgrade_from_0004_keeps_every_job(empty_db_url: str) -> None:
    _fill_0004(empty_db_url)
    assert current(empty_db_url) == "0004"
    before = job_rows(empty_db_url)
    assert len(before) == len(OLD_JOBS)

    assert upgrade(empty_db_url) == HEAD_REVISION  # 0006, or a later head
    after = job_rows(empty_db_url)
    added = {"result", "block_key_on_dead", "traceparent"}  # the columns of 0005 to 0007
    assert [{k: v for k, v in r.items() if k not in added} for r in after] == before
    assert all(r["result"] is None and not r["block_key_on_dead"] for r in after)

    with Store(empty_db_url, cluster=CLUSTER, partitions=4) as store:
        records = {j["id"]: store.get_job(j["id"]) for j in OLD_JOBS}
        for job in OLD_JOBS:
            record = records[job["id"]]
            assert record is not None
            assert (record.state, record.attempts, record.last_error, record.payload) == (
                job["state"], job["attempts"], job["last_error"], {"n": job["id"]})
            assert record.result is None and store.get_attempts(job["id"]) == []
        # The running job finishes under the claim the old release gave it ...
        assert store.complete("n1", [(2, 1)], {2: '{"ok": true}'}) == []
        done = store.get_job(2)
        assert done is not None and done.state == "succeeded" and done.result == {"ok": True}
        [attempt] = store.get_attempts(2)
        assert (attempt.attempt, attempt.node, attempt.epoch, attempt.outcome) == (
            1, "n1", 1, "succeeded")
        # ... and the queued one is claimed and its history begins.
        [job] = store.claim("n1", dict.fromkeys(range(4), 1), 10)
        assert job.id == 1
        store.fail("n1", job.id, job.token, "E", retry_delay=None)
        assert [a.outcome for a in store.get_attempts(1)] == ["failed"]
