import asyncio

import pytest

from ringwork import App, Job
from ringwork.errors import ConfigurationError, PayloadError, UnknownTaskError
from ringwork.partitioner import partition_for


def make_app() -> App:
    app = App(database_url="sqlite:///nowhere/never-opened.db", partitions=32, cluster="t")

    @app.task("plain", max_attempts=3)
    def plain(job: Job) -> None: ...

    @app.task("ordered", ordered=True, priority=5)
    async def ordered(job: Job) -> None:
        await asyncio.sleep(0)

    return app


def test_partition_for_works_offline_and_matches_partitioner() -> None:
    app = make_app()
    assert app.partition_for("img-1") == partition_for("img-1", 32)
    assert app._store is None  # nothing touched the database


def test_task_registration_and_options() -> None:
    app = make_app()
    assert set(app.tasks) == {"plain", "ordered"}
    assert not app.tasks["plain"].is_async
    assert app.tasks["ordered"].is_async
    job = app.build_job("ordered", "k", {"a": 1})
    assert job.ordered and job.priority == 5 and job.partition == app.partition_for("k")
    assert app.build_job("plain", "k").max_attempts == 3


def test_duplicate_task_rejected() -> None:
    app = make_app()
    with pytest.raises(ConfigurationError, match="twice"):
        app.task("plain")(lambda job: None)


def test_unknown_task_and_bad_payload_fail_before_the_database() -> None:
    app = make_app()
    with pytest.raises(UnknownTaskError, match="unknown task 'nope'"):
        app.build_job("nope", "k")
    with pytest.raises(PayloadError, match="not JSON"):
        app.build_job("plain", "k", {"x": object()})
    with pytest.raises(PayloadError, match="key must be a string"):
        app.build_job("plain", 5)  # type: ignore[arg-type]
    assert app._store is None


def test_environment_overrides_app_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGWORK_DATABASE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("RINGWORK_CONCURRENCY", "3")
    app = make_app()
    assert app.settings.database_url == "sqlite:///from-env.db"
    assert app.settings.concurrency == 3
    assert app.settings.partitions == 32
    app.configure(concurrency=7, database_url=None)
    assert app.settings.concurrency == 7
    assert app.settings.database_url == "sqlite:///from-env.db"


def test_bad_environment_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGWORK_CONCURRENCY", "many")
    with pytest.raises(ConfigurationError, match="RINGWORK_CONCURRENCY='many'"):
        _ = make_app().settings


def test_invalid_settings_rejected() -> None:
    with pytest.raises(ConfigurationError):
        App(partitions=0)


def test_bind_and_advertise_hosts_are_derived_from_addresses() -> None:
    from ringwork.settings import Settings, host_of

    assert host_of("tcp://127.0.0.1:*") == "127.0.0.1"
    assert host_of("tcp://*:5555") == "0.0.0.0"
    assert host_of("tcp://[::1]:5555") == "::1"
    assert host_of("10.0.0.7") == "10.0.0.7"
    settings = Settings(bind="tcp://0.0.0.0:*", advertise="tcp://worker-3:7000")
    assert settings.bind_host == "0.0.0.0" and settings.advertise_host == "worker-3"
    assert Settings().advertise_host is None


def test_default_settings_give_the_protocols_default_timings() -> None:
    """Settings repeats three protocol defaults (layering keeps it from importing them)."""
    from ringwork.protocol.config import ProtocolConfig
    from ringwork.settings import Settings
    from ringwork.worker import protocol_config

    assert protocol_config(Settings()) == ProtocolConfig()


def test_explicit_settings_are_kept_unless_a_keyword_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 10, bug 1: the keyword defaults (64, "default") used to override ``settings=``."""
    from ringwork.settings import Settings

    for name in ("PARTITIONS", "CLUSTER", "DATABASE_URL", "CONCURRENCY"):
        monkeypatch.delenv(f"RINGWORK_{name}", raising=False)
    given = Settings(partitions=8, cluster="c8", concurrency=5, database_url="sqlite:///s.db")
    app = App(settings=given)
    assert app.settings == given
    # A keyword that is passed wins over the settings object, field by field.
    app = App(partitions=16, settings=given)
    assert (app.settings.partitions, app.settings.cluster) == (16, "c8")
    assert App(cluster="k", settings=given).settings.partitions == 8
    # The environment overrides both; CLI flags (configure) override the environment.
    monkeypatch.setenv("RINGWORK_CLUSTER", "from-env")
    app = App(cluster="k", settings=given)
    assert (app.settings.cluster, app.settings.partitions) == ("from-env", 8)
    app.configure(cluster="from-flag")
    assert app.settings.cluster == "from-flag"
    # Without settings=, the keywords and then the documented defaults apply.
    monkeypatch.delenv("RINGWORK_CLUSTER")
    assert (App().settings.partitions, App().settings.cluster) == (64, "default")
