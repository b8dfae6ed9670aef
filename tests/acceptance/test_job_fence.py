"""Fencing by job as well as by partition, with real worker processes (SQLite and PostgreSQL).

A rebalance between live nodes never re-runs a job and never waits for one: a job claimed by a
node that is still a member keeps its claim when its partition moves, and the partition's new
owner starts its other jobs at once. Only the jobs of a dead node (kill -9) are re-queued --
also those of partitions that had already moved away from it. A graceful stop gives its
partitions away at once and finishes its jobs within ``--grace``; what still runs at the end
of the grace is written back as abandoned, its attempt counted.

The cluster has 16 partitions, so one long job per partition fills two workers of concurrency
8: the jobs queued behind them can only start where a partition went. What ran is judged from
the handlers' event files (one ``S`` line per start), hand-over times from the partition
callbacks (``A``/``R`` lines); outcomes and attempts from the database.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringwork.partitioner import partition_for
from tests.acceptance.cluster import Cluster, Proc
from tests.support import wait_for

pytestmark = pytest.mark.slow

PARTITIONS = 16
CONCURRENCY = 8  # two workers x 8 = one long job per partition fills both
PARTITION_EVENTS = {"RINGWORK_TEST_PARTITION_EVENTS": "1"}
#: Generous bounds for a busy 2-core machine; the issue's figures are 0.5 s and ~1 s.
START_BOUND = 3.0
HANDOVER_BOUND = 4.0
ABANDONED = "abandoned at shutdown after the grace period"


@pytest.fixture
def cluster(db_url: str, cluster_name: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(db_url, cluster_name, tmp_path, partitions=PARTITIONS)
    yield c
    c.close()


def start(cluster: Cluster, n: int, *extra: str,
          concurrency: int = CONCURRENCY) -> list[Proc]:
    return cluster.start(n, "--concurrency", str(concurrency), *extra, env=PARTITION_EVENTS)


def keys_by_partition(prefix: str, per: int = 1) -> dict[int, list[str]]:
    """``per`` distinct keys landing on each partition (found by trying names in order)."""
    found: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    i = 0
    while any(len(keys) < per for keys in found.values()):
        key = f"{prefix}-{i}"
        keys = found[partition_for(key, PARTITIONS)]
        if len(keys) < per:
            keys.append(key)
        i += 1
    return found


def enqueue(cluster: Cluster, keys: list[str], ms: int) -> list[int]:
    return cluster.app.enqueue_many(
        [{"task": "rec", "key": key, "payload": {"seq": i, "ms": ms}}
         for i, key in enumerate(keys)])


def node_id(cluster: Cluster, proc: Proc) -> str:
    node = wait_for(lambda: cluster.node_of(proc), 10, 0.05, "the node in the registry")
    assert node is not None
    return str(node["id"])


def owners(cluster: Cluster) -> dict[int, str | None]:
    return {p: o.owner for p, o in cluster.app.store.read_partitions().items()}


def all_started(cluster: Cluster, ids: list[int], times: int = 1) -> bool:
    starts = cluster.events().starts
    return all(len(starts.get(i, [])) >= times for i in ids)


def wait_states(cluster: Cluster, ids: list[int], state: str, timeout: float) -> None:
    def reached() -> bool:
        return all((r := cluster.app.get_job(i)) is not None and r.state == state for i in ids)

    try:
        wait_for(reached, timeout, 0.1, f"{len(ids)} jobs {state}")
    except AssertionError:
        found = {i: (r.state, r.attempts) if (r := cluster.app.get_job(i)) else None
                 for i in ids}
        raise AssertionError(f"{found}\n{cluster.logs()}") from None


def test_scale_out_with_long_jobs_runs_none_twice_and_starts_the_others_at_once(
    cluster: Cluster,
) -> None:
    """Two full workers (a 15 s job on every partition) and a third joins: the partitions it
    takes move while their long jobs run on; the jobs queued behind them start on the newcomer
    within seconds of the hand-over (not when the long jobs end), and no long job runs twice."""
    first = start(cluster, 2)
    cluster.wait_balanced(first)
    long_ms = 15_000
    long_ids = enqueue(cluster, [keys[0] for keys in keys_by_partition("long").values()],
                       long_ms)
    wait_for(lambda: all_started(cluster, long_ids), 20, 0.05, "a long job on every partition")
    short_keys = keys_by_partition("short", per=2)
    short_ids = enqueue(cluster, [k for keys in short_keys.values() for k in keys], 5)
    short_partition = {job: partition_for(key, PARTITIONS) for job, key in
                       zip(short_ids, [k for keys in short_keys.values() for k in keys],
                           strict=True)}
    joined_at = time.time()
    (third,) = start(cluster, 1)
    doc = cluster.wait_balanced([*first, third], timeout=30)
    newcomer = cluster.node_of(third, doc)
    assert newcomer is not None
    moved = set(newcomer["partitions"])
    assert moved, doc

    def moved_partitions_started() -> bool:
        starts = cluster.events().starts
        return all(any(short_partition[j] == p and starts.get(j) for j in short_ids)
                   for p in moved)

    try:
        wait_for(moved_partitions_started, long_ms / 1000 + 10, 0.05,
                 "a queued job of every moved partition started")
    except AssertionError:
        raise AssertionError(cluster.logs()) from None
    events = cluster.events()
    from_revoke, from_assign = [], []
    for p in sorted(moved):
        first_start = min(events.starts[j][0][1] for j in short_ids
                          if short_partition[j] == p and events.starts.get(j))
        revoked = [ts for pid, ts in events.revoked.get(p, [])
                   if pid != third.worker_pid and ts >= joined_at]
        assigned = [ts for pid, ts in events.assigned.get(p, []) if pid == third.worker_pid]
        assert revoked and assigned, (p, events.revoked.get(p), events.assigned.get(p))
        from_revoke.append(first_start - revoked[-1])
        from_assign.append(first_start - assigned[0])
    print(f"moved partitions {sorted(moved)}: first queued job started "
          f"{statistics.median(from_revoke):.3f} s p50 / {max(from_revoke):.3f} s max after "
          f"the old owner's revoke; {statistics.median(from_assign):.3f} / "
          f"{max(from_assign):.3f} s after the new owner's assignment")
    assert max(from_revoke) < START_BOUND, (from_revoke, cluster.logs())
    # The long jobs finish where they started, once each, on their first attempt.
    wait_states(cluster, long_ids + short_ids, "succeeded", long_ms / 1000 + 15)
    events = cluster.events()
    twice = {j: events.starts[j] for j in long_ids + short_ids if len(events.starts[j]) != 1}
    assert not twice, twice
    workers = {p.worker_pid for p in first}
    for job in long_ids:
        record = cluster.app.get_job(job)
        assert record is not None and record.attempts == 1, record
        (start_pid, _), (end_pid, _) = events.starts[job][0], events.ends[job][0]
        assert start_pid == end_pid and start_pid in workers
    assert "event=job_fenced" not in "".join(p.log.read_text() for p in cluster.procs)


def test_sigterm_gives_partitions_away_at_once_and_finishes_its_jobs(
    cluster: Cluster,
) -> None:
    """With ``--grace 30`` and 8 s jobs, a stopping worker's partitions are the other
    worker's within seconds (its jobs still running), the other worker runs new jobs of them
    at once, and the stopped worker finishes its own: succeeded, attempt 1, exit 0."""
    target, other = start(cluster, 2, "--grace", "30")
    doc = cluster.wait_balanced([target, other])
    mine = cluster.node_of(target, doc)
    assert mine is not None
    keys = keys_by_partition("stop")
    theirs = sorted(mine["partitions"])[:4]
    job_ms = 8_000
    ids = enqueue(cluster, [keys[p][0] for p in theirs], job_ms)
    wait_for(lambda: all_started(cluster, ids), 20, 0.05, "the jobs running on the target")
    assert {cluster.events().starts[i][0][0] for i in ids} == {target.worker_pid}
    sent = time.monotonic()
    cluster.signal(target, signal.SIGTERM)
    other_id = node_id(cluster, other)
    try:
        wait_for(lambda: set(owners(cluster).values()) == {other_id}, HANDOVER_BOUND, 0.05,
                 "every partition owned by the other worker")
    except AssertionError:
        raise AssertionError(f"{owners(cluster)}\n{cluster.logs()}") from None
    handed_s = time.monotonic() - sent
    # A new job of a partition the target gave away starts on the other worker while the
    # target's jobs still run.
    [fresh] = enqueue(cluster, [keys_by_partition("fresh")[theirs[0]][0]], 5)
    wait_for(lambda: all_started(cluster, [fresh]), START_BOUND, 0.02, "a new job started")
    events = cluster.events()
    assert events.starts[fresh][0][0] == other.worker_pid
    assert not any(events.ends.get(i) for i in ids), "the long jobs ended too soon to tell"
    print(f"partitions handed over {handed_s:.2f} s after SIGTERM")
    try:
        code = target.popen.wait(40)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker still running\n{cluster.logs()}") from None
    assert code == 0, cluster.logs()
    log = target.log.read_text()
    assert "event=grace_expired" not in log, log
    events = cluster.events()
    for job in ids:
        record = cluster.app.get_job(job)
        assert record is not None and record.state == "succeeded" and record.attempts == 1, (
            record, cluster.logs())
        assert [pid for pid, _ in events.starts[job]] == [target.worker_pid]
        assert [pid for pid, _ in events.ends[job]] == [target.worker_pid]


def test_jobs_running_at_the_grace_end_are_abandoned_counted_and_run_by_the_next_owner(
    cluster: Cluster,
) -> None:
    """``--grace 2`` and 60 s jobs: at the grace end the stopping worker writes them back
    with an error saying so (attempt 1 counted); the partitions' new owner runs them again
    (attempt 2)."""
    target, other = start(cluster, 2, "--grace", "2")
    doc = cluster.wait_balanced([target, other])
    mine = cluster.node_of(target, doc)
    assert mine is not None
    keys = keys_by_partition("grace")
    ids = enqueue(cluster, [keys[p][0] for p in sorted(mine["partitions"])[:3]], 60_000)
    wait_for(lambda: all_started(cluster, ids), 20, 0.05, "the jobs running on the target")
    sent = time.monotonic()
    cluster.signal(target, signal.SIGTERM)
    try:
        assert target.popen.wait(20) == 0, cluster.logs()
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker still running\n{cluster.logs()}") from None
    took = time.monotonic() - sent
    assert took < 2 + 8, took
    try:
        wait_for(lambda: all_started(cluster, ids, times=2), 15, 0.05,
                 "the abandoned jobs started again")
    except AssertionError:
        raise AssertionError(f"{[cluster.app.get_job(i) for i in ids]}\n{cluster.logs()}"
                             ) from None
    events = cluster.events()
    for job in ids:
        assert [pid for pid, _ in events.starts[job]] == [target.worker_pid, other.worker_pid]
        record = cluster.app.get_job(job)
        assert record is not None and record.attempts == 2, record
        assert ABANDONED in (record.last_error or ""), record
        assert "lost" not in (record.last_error or ""), record


@pytest.mark.parametrize("victim_role", ["follower", "leader"])
def test_kill9_requeues_the_dead_workers_jobs_also_of_partitions_it_no_longer_owned(
    cluster: Cluster, victim_role: str,
) -> None:
    """A scale-out moves partitions while their long jobs run on (carried jobs); then the
    old owner is killed (a follower: the leader re-queues its jobs; the leader: the next one
    does): every job it ran -- carried ones too -- runs again on a survivor (attempt 2), and
    the survivors' own jobs keep running, once."""
    first = start(cluster, 2, concurrency=32)
    cluster.wait_balanced(first)
    long_ids = enqueue(cluster, [keys[0] for keys in keys_by_partition("k9").values()],
                       30_000)
    wait_for(lambda: all_started(cluster, long_ids), 20, 0.05, "a long job on every partition")
    (third,) = start(cluster, 1, concurrency=32)
    doc = cluster.wait_balanced([*first, third], timeout=30)
    leads = [(f"-{p.worker_pid}-" in doc["leader"]) == (victim_role == "leader") for p in first]
    victim, survivor = first if leads[0] else first[::-1]
    victim_id = node_id(cluster, victim)
    owned = owners(cluster)
    records = {j: cluster.app.get_job(j) for j in long_ids}
    victims_jobs = [j for j, r in records.items() if r and r.claimed_by == victim_id]
    carried = [j for j in victims_jobs
               if (r := records[j]) and owned[r.partition] != victim_id]
    assert carried, (records, owned)
    assert {cluster.events().starts[j][0][0] for j in victims_jobs} == {victim.worker_pid}
    cluster.kill9(victim)
    cluster.wait_balanced([survivor, third], timeout=30)
    try:
        wait_for(lambda: all_started(cluster, victims_jobs, times=2),
                 cluster.session_timeout + 20, 0.1, "the dead worker's jobs started again")
    except AssertionError:
        raise AssertionError(f"{[cluster.app.get_job(j) for j in victims_jobs]}\n"
                             f"{cluster.logs()}") from None
    events = cluster.events()
    survivors = {survivor.worker_pid, third.worker_pid}
    for job in victims_jobs:
        assert len(events.starts[job]) == 2 and events.starts[job][1][0] in survivors
        record = cluster.app.get_job(job)
        assert record is not None and record.attempts == 2, record
    for job in set(long_ids) - set(victims_jobs):
        assert len(events.starts[job]) == 1, (job, events.starts[job])
        record = cluster.app.get_job(job)
        assert record is not None and record.attempts == 1 and record.state == "running"
    print(f"{len(victims_jobs)} jobs of the killed worker ran again, {len(carried)} of them "
          "carried (their partition had moved away before the kill)")


def test_ordered_keys_never_overlap_when_a_partition_moves_under_a_running_head(
    cluster: Cluster,
) -> None:
    """Every partition has two ordered keys: one whose head is a 12 s job followed by a short
    one, and one with a short job only. After a scale-out, a moved partition's second key
    starts at once on the newcomer, while the first key's next job waits for its head, still
    running on the old owner, to end (the head check sees a predecessor running anywhere)."""
    first = start(cluster, 2)
    cluster.wait_balanced(first)
    keys = keys_by_partition("ord", per=2)
    long_ms = 12_000

    def ordered(key: str, seq: int, ms: int) -> dict[str, object]:
        return {"task": "ordered_rec", "key": key, "payload": {"seq": seq, "ms": ms}}

    heads = cluster.app.enqueue_many([ordered(keys[p][0], 0, long_ms) for p in keys])
    wait_for(lambda: all_started(cluster, heads), 20, 0.05, "a long head on every partition")
    followers = cluster.app.enqueue_many([ordered(keys[p][0], 1, 5) for p in keys])
    others = cluster.app.enqueue_many([ordered(keys[p][1], 0, 5) for p in keys])
    joined_at = time.time()
    (third,) = start(cluster, 1)
    doc = cluster.wait_balanced([*first, third], timeout=30)
    newcomer = cluster.node_of(third, doc)
    assert newcomer is not None
    moved = set(newcomer["partitions"])
    assert moved, doc
    moved_others = [job for p, job in zip(keys, others, strict=True) if p in moved]
    try:
        wait_for(lambda: all_started(cluster, moved_others), START_BOUND + 2, 0.05,
                 "the moved partitions' other keys started")
    except AssertionError:
        raise AssertionError(cluster.logs()) from None
    events = cluster.events()
    took = max(events.starts[j][0][1] for j in moved_others) - joined_at
    assert all(events.starts[j][0][0] == third.worker_pid for j in moved_others)
    assert not any(events.ends.get(h) for h in heads), "the heads ended too soon to tell"
    assert not any(events.starts.get(f) for f in followers), "a key's next job overlapped"
    print(f"moved partitions' other keys started within {took:.2f} s of the third worker's "
          "start, their heads still running")
    wait_states(cluster, heads + followers + others, "succeeded", long_ms / 1000 + 15)
    events = cluster.events()
    for p, head, follower in zip(keys, heads, followers, strict=True):
        assert len(events.starts[head]) == len(events.starts[follower]) == 1
        head_end = events.ends[head][0][1]
        assert events.starts[follower][0][1] >= head_end, (p, events.starts[follower], head_end)
        if p in moved:
            assert events.starts[follower][0][0] == third.worker_pid


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_a_zombie_that_rejoined_is_refused_the_jobs_it_ran_before_its_pause(
    cluster: Cluster, tmp_path: Path,
) -> None:
    """A worker paused (SIGSTOP) past the session timeout while its jobs run is declared
    dead: its jobs run again on the other worker. Woken up, it rejoins as a live member -- and
    the results of the jobs it started before the pause are still refused (their claims were
    re-queued, so job fencing does not keep them). PostgreSQL only: on SQLite a process frozen
    inside a write transaction holds the database's one write lock until it wakes."""
    target, other = start(cluster, 2)
    doc = cluster.wait_balanced([target, other])
    mine = cluster.node_of(target, doc)
    assert mine is not None
    keys = keys_by_partition("zombie")
    gate = tmp_path / "gate"
    ids = cluster.app.enqueue_many(
        [{"task": "gated", "key": keys[p][0], "payload": {"gate": str(gate)}}
         for p in sorted(mine["partitions"])[:3]])
    wait_for(lambda: all_started(cluster, ids), 20, 0.05, "the gated jobs running")
    cluster.signal(target, signal.SIGSTOP)
    try:
        wait_for(lambda: all_started(cluster, ids, times=2), cluster.session_timeout + 20, 0.1,
                 "the paused worker's jobs started again")
    finally:
        cluster.signal(target, signal.SIGCONT)
    cluster.wait_balanced([target, other], timeout=30)  # a member again
    gate.touch()
    wait_states(cluster, ids, "succeeded", 20)
    wait_for(lambda: all(len(cluster.events().ends.get(i, [])) == 2 for i in ids), 20, 0.05,
             "both runs of every job ended")
    events = cluster.events()
    for job in ids:
        assert [pid for pid, _ in events.starts[job]] == [target.worker_pid, other.worker_pid]
        record = cluster.app.get_job(job)
        assert record is not None and record.attempts == 2, record
        assert record.claimed_by == node_id(cluster, other), record

    def written(proc: Proc, outcome: str) -> float:
        return proc.metrics().get(f'ringwork_jobs_total{{outcome="{outcome}"}}', 0)

    assert written(other, "succeeded") == len(ids)
    assert written(target, "succeeded") == 0, target.log.read_text()
    assert written(target, "fenced") + written(target, "dropped") == len(ids), (
        target.metrics(), target.log.read_text())
