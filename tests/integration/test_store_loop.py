"""Store calls made from an event loop (PostgreSQL): the loop claim, fenced like the store's, and
the listener's non-blocking poll."""

from __future__ import annotations

import asyncio
import select
import time
from pathlib import Path

import psycopg
import pytest

from ringwork.errors import DatabaseUnavailable
from ringwork.job import Job, JobState, NewJob
from ringwork.store import Store
from tests.support import own_all

NODE = "node-a"


def test_no_loop_claimer_on_sqlite(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'x.db'}", cluster="c", partitions=4) as s:
        assert s.claimer() is None


@pytest.mark.postgres
def test_loop_claim_matches_the_store_claim(pg_database_url: str) -> None:
    with Store(pg_database_url, cluster="aclaim-same", partitions=8) as s:
        epochs = own_all(s)
        ids = s.enqueue([NewJob(task="t", key=f"k{i}", partition=i % 3, payload={"i": i},
                                priority=i % 2) for i in range(6)])
        claimer = s.claimer()
        assert claimer is not None

        async def run() -> tuple[list[Job], list[Job], list[Job]]:
            try:
                first = await claimer.claim(NODE, {0: epochs[0], 1: epochs[1]}, 3)
                rest = await claimer.claim(NODE, epochs, 10)
                none = await claimer.claim(NODE, epochs, 10)
                return first, rest, none
            finally:
                await claimer.close()

        first, rest, none = asyncio.run(run())
        # Priority first, then id; only the partitions asked for.
        assert [j.id for j in first] == [ids[1], ids[3], ids[0]]
        assert {j.partition for j in first} <= {0, 1}
        assert sorted(j.id for j in first + rest) == sorted(ids) and none == []
        j = first[0]
        assert (j.task, j.key, j.partition, j.payload, j.attempt) == ("t", "k1", 1, {"i": 1}, 1)
        assert j.token == epochs[1]
        rec = s.get_job(j.id)
        assert rec is not None and rec.state == JobState.RUNNING and rec.claimed_by == NODE
        assert s.complete(NODE, [(j.id, j.token)]) == []


@pytest.mark.postgres
def test_loop_claim_is_fenced_by_owner_and_epoch(pg_database_url: str) -> None:
    with Store(pg_database_url, cluster="aclaim-fence", partitions=4) as s:
        epochs = own_all(s)
        s.enqueue([NewJob(task="t", key="k", partition=2)])
        claimer = s.claimer()
        assert claimer is not None

        async def run() -> list[list[Job]]:
            try:
                return [
                    await claimer.claim(NODE, {2: epochs[2] - 1}, 5),  # a stale epoch
                    await claimer.claim("node-b", {2: epochs[2]}, 5),  # not the owner
                    await claimer.claim(NODE, {2: epochs[2]}, 5),
                ]
            finally:
                await claimer.close()

        stale, other, mine = asyncio.run(run())
        assert stale == [] and other == [] and len(mine) == 1


@pytest.mark.postgres
def test_loop_claim_reconnects_after_its_connection_is_cut(pg_database_url: str) -> None:
    with Store(pg_database_url, cluster="aclaim-cut", partitions=4) as s:
        epochs = own_all(s)
        claimer = s.claimer()
        assert claimer is not None

        def cut() -> int:
            with s.engine.connect() as conn:
                return len(conn.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND application_name = 'ringwork' AND position('WITH owned' IN query) > 0"
                ).all())

        async def run() -> list[Job]:
            try:
                assert await claimer.claim(NODE, epochs, 5) == []
                assert cut() == 1
                with pytest.raises(DatabaseUnavailable):
                    await claimer.claim(NODE, epochs, 5)
                s.enqueue([NewJob(task="t", key="k", partition=1)])
                return await claimer.claim(NODE, epochs, 5)
            finally:
                await claimer.close()

        assert [j.partition for j in asyncio.run(run())] == [1]


@pytest.mark.postgres
def test_listener_poll_reads_without_waiting(pg_database_url: str) -> None:
    with Store(pg_database_url, cluster="listen-poll", partitions=16) as s:
        listener = s.listen()
        assert listener is not None
        try:
            started = time.monotonic()
            assert listener.poll() == set()
            assert time.monotonic() - started < 0.5
            s.enqueue([NewJob(task="t", key="a", partition=4), NewJob(task="t", key="b",
                                                                       partition=6)])
            readable, _, _ = select.select([listener.fileno()], [], [], 5)
            assert readable
            seen: set[int] = set()
            deadline = time.monotonic() + 5
            while seen != {4, 6} and time.monotonic() < deadline:
                seen |= listener.poll()
            assert seen == {4, 6}
            with psycopg.connect(pg_database_url.replace("+psycopg", "")) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND query LIKE 'LISTEN _%' "
                              "AND pid <> pg_backend_pid()")
            # The loop's reader keeps firing on a dead socket until poll raises.
            with pytest.raises(DatabaseUnavailable):
                for _ in range(10):
                    select.select([listener.fileno()], [], [], 1)
                    listener.poll()
        finally:
            listener.close()


@pytest.mark.postgres
def test_listen_and_loop_claimer_connect_like_the_pool(pg_database_url: str) -> None:
    """One set of psycopg connection arguments for all three connections.

    The LISTEN connection used to get the URL's alone: none of the session settings, no
    ``application_name``, and psycopg's default connect timeout (130 s) instead of ours.
    """
    url = pg_database_url + ("&" if "?" in pg_database_url else "?") + "options=-c%20work_mem%3D8MB"
    with Store(url, cluster="connect-args", partitions=4) as s:
        epochs = own_all(s)
        with s.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            pool = raw.info.get_parameters()
        assert pool["application_name"] == "ringwork" and pool["connect_timeout"] == "10"
        claimer = s.claimer()
        listener = s.listen()
        assert claimer is not None and listener is not None

        async def claimer_parameters() -> dict[str, str]:
            try:
                await claimer.claim(NODE, epochs, 1)
                assert claimer._conn is not None
                return claimer._conn.info.get_parameters()
            finally:
                await claimer.close()

        try:
            assert asyncio.run(claimer_parameters()) == pool
            assert listener._conn.info.get_parameters() == pool
            settings = listener._conn.execute(
                "SELECT current_setting('plan_cache_mode'), current_setting('jit'), "
                "current_setting('work_mem')"
            ).fetchone()
            assert settings == ("force_generic_plan", "off", "8MB")
        finally:
            listener.close()
