"""The same-database check of ``connection=`` (no database needed: it sends nothing)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from ringwork.errors import ConfigurationError
from ringwork.store.external import check_same_database

APP_PG = "postgresql://app:secret@db:6543/shop"


def test_the_app_database_passes() -> None:
    check_same_database(APP_PG, "postgresql", sa.make_url("postgresql+psycopg://x@db:6543/shop"))
    # libpq's view wins over the URL; the host is not compared (localhost vs 127.0.0.1, sockets)
    check_same_database(APP_PG, "postgresql", None, SimpleNamespace(dbname="shop", port=6543))


@pytest.mark.parametrize(
    ("url", "info", "needle"),
    [
        ("postgresql://x@db:6543/other", None, "database 'other'"),
        (None, SimpleNamespace(dbname="other", port=6543), "database 'other'"),
        (None, SimpleNamespace(dbname="shop", port=5432), "port 5432"),
    ],
)
def test_another_postgresql_database_is_one_line(url: str | None, info: object,
                                                 needle: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        check_same_database(APP_PG, "postgresql", url and sa.make_url(url), info)
    text = str(err.value)
    assert needle in text and "not the app's" in text and "\n" not in text
    assert "secret" not in text  # the app's password is never shown


def test_another_dialect_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="a sqlite connection but the app's database"):
        check_same_database(APP_PG, "sqlite", sa.make_url("sqlite:///x.db"))


def test_sqlite_compares_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "app.db").touch()
    monkeypatch.chdir(tmp_path)
    app = f"sqlite:///{tmp_path / 'app.db'}"
    check_same_database(app, "sqlite", sa.make_url("sqlite:///app.db"))  # relative, same file
    with pytest.raises(ConfigurationError, match=r"'other\.db', not the app's"):
        check_same_database(app, "sqlite", sa.make_url("sqlite:///other.db"))
    with pytest.raises(ConfigurationError, match="not the app's"):
        check_same_database(app, "sqlite", sa.make_url("sqlite://"))
