"""All migrations applied == ``ringwork.store.schema.metadata``, and upgrading is race-free."""

from __future__ import annotations

import multiprocessing
import traceback
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from ringwork.store import Store
from ringwork.store.engine import create_engine
from ringwork.store.migrate import current, head, migrations_dir, upgrade
from ringwork.store.schema import VERSION_TABLE, metadata


def schema_diff(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "version_table": VERSION_TABLE,
                    "include_name": lambda name, type_, parent: name != VERSION_TABLE,
                },
            )
            return list(compare_metadata(ctx, metadata))
    finally:
        engine.dispose()


def indexes(url: str) -> dict[str, tuple[bool, tuple[str | None, ...]]]:
    engine = create_engine(url)
    try:
        insp = sa.inspect(engine)
        return {
            ix["name"]: (bool(ix["unique"]), tuple(ix["column_names"]))
            for ix in insp.get_indexes("ringwork_jobs")
            if ix["name"]
        }
    finally:
        engine.dispose()


def test_upgrade_to_head_yields_the_metadata(empty_db_url: str) -> None:
    assert current(empty_db_url) is None
    assert upgrade(empty_db_url) == head()
    assert current(empty_db_url) == head()
    assert schema_diff(empty_db_url) == []
    # compare_metadata does not compare partial-index predicates; check names and shape here.
    expected = {
        ix.name: (bool(ix.unique), tuple(c.name for c in ix.columns) or None)
        for ix in metadata.tables["ringwork_jobs"].indexes
    }
    found = indexes(empty_db_url)
    assert set(found) == set(expected)
    for name, (unique, _cols) in expected.items():
        assert found[name][0] == unique, name


def test_upgrade_is_idempotent(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    assert upgrade(empty_db_url) == head()
    assert schema_diff(empty_db_url) == []


def _upgrade_in_process(url: str, start: Any, out: str) -> None:
    try:
        start.wait(30)  # a barrier: all processes are imported and ready, then go at once
        rev = upgrade(url)
        with Store(url, cluster="race", partitions=4) as s:  # open() migrates + creates too
            s.read_term()
        Path(out).write_text(rev)
    except BaseException:
        Path(out).write_text("ERROR " + traceback.format_exc())


def test_concurrent_upgrades_from_two_processes(empty_db_url: str, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"p{i}.txt" for i in range(3)]
    start = ctx.Barrier(len(outs))
    procs = [
        ctx.Process(target=_upgrade_in_process, args=(empty_db_url, start, str(o))) for o in outs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert [o.read_text() for o in outs] == [head()] * len(outs)
    assert schema_diff(empty_db_url) == []
    with Store(empty_db_url, cluster="race", partitions=4) as s:
        assert sorted(s.read_partitions()) == [0, 1, 2, 3]


def test_migrations_ship_as_a_package() -> None:
    # pyproject maps migrations/ to ringwork.migrations, so an installed wheel finds it too.
    root = resources.files("ringwork.migrations")
    assert root.joinpath("env.py").is_file()
    assert root.joinpath("script.py.mako").is_file()
    assert any(p.name.startswith("0001_") for p in root.joinpath("versions").iterdir())
    assert migrations_dir() == Path(str(root))


def test_head_constant_matches_alembic() -> None:
    """Workers check the schema against HEAD_REVISION without importing Alembic."""
    from ringwork.store.migrate import head
    from ringwork.store.schema import HEAD_REVISION

    assert head() == HEAD_REVISION


def _upgrade_to(url: str, revision: str) -> None:
    from alembic import command

    from ringwork.store.migrate import _config

    engine = create_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            command.upgrade(_config(conn), revision)
    finally:
        engine.dispose()


def _index_sql(url: str, name: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                query = "SELECT indexdef FROM pg_indexes WHERE indexname = :n"
            else:
                query = "SELECT sql FROM sqlite_master WHERE name = :n"
            return str(conn.execute(sa.text(query), {"n": name}).scalar())
    finally:
        engine.dispose()


def test_0005_keeps_every_job_and_rebuilds_the_ordered_index(empty_db_url: str) -> None:
    """A database with jobs from 0004 upgrades in place: every row kept as it was, the new flag
    false, the ordered-key index with its new predicate, the claim index still ``priority
    DESC`` (a table copy on SQLite would have lost it)."""
    _upgrade_to(empty_db_url, "0004")
    engine = create_engine(empty_db_url)
    states = ["queued", "running", "succeeded", "dead", "cancelled"] * 4
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO ringwork_clusters (name, partitions, created_at) "
                "VALUES ('old', 4, CURRENT_TIMESTAMP)"))
            for i, state in enumerate(states):
                conn.execute(sa.text(
                    "INSERT INTO ringwork_jobs (cluster, task, \"key\", \"partition\", payload, "
                    "state, run_at, ordered, last_error, enqueued_at) VALUES ('old', 't', :k, "
                    ":p, :payload, :s, CURRENT_TIMESTAMP, :o, :e, CURRENT_TIMESTAMP)"),
                    {"k": f"k{i % 3}", "p": i % 4, "payload": f'{{"i": {i}}}', "s": state,
                     "o": i % 2 == 0, "e": None if state != "dead" else "boom"})
            before = conn.execute(sa.text(
                "SELECT id, state, \"key\", ordered, last_error, payload FROM ringwork_jobs "
                "ORDER BY id")).all()
    finally:
        engine.dispose()
    assert upgrade(empty_db_url) == head()
    assert schema_diff(empty_db_url) == []
    engine = create_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            after = conn.execute(sa.text(
                "SELECT id, state, \"key\", ordered, last_error, payload FROM ringwork_jobs "
                "ORDER BY id")).all()
            flags = conn.execute(sa.text(
                "SELECT DISTINCT block_key_on_dead FROM ringwork_jobs")).scalars().all()
    finally:
        engine.dispose()
    assert after == before and len(after) == len(states)
    assert [bool(f) for f in flags] == [False]
    ordered = _index_sql(empty_db_url, "ix_ringwork_jobs_ordered")
    assert "block_key_on_dead" in ordered and "dead" in ordered, ordered
    claim = _index_sql(empty_db_url, "ix_ringwork_jobs_claim")
    assert "priority DESC" in claim, claim
    # And the upgraded store works: the old jobs are claimable, the flag writable.
    with Store(empty_db_url, cluster="old", partitions=4) as store:
        from ringwork.job import NewJob

        [new_id] = store.enqueue([NewJob(task="t", key="k9", partition=0, ordered=True,
                                         block_key_on_dead=True)])
        rec = store.get_job(new_id)
        assert rec is not None and rec.block_key_on_dead
        assert store.counts_by_state()["queued"] == 5
