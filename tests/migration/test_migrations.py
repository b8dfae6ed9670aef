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
