"""The settings flags of ``ringwork worker`` and ``ringwork run``, through click's runner.

Nothing starts: the worker runtime and the supervisor are replaced by recorders, so these tests
see exactly the settings a worker would have been given, and the arguments ``run`` would have
started its workers with.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ringwork.app import App
from ringwork.cli import cli
from ringwork.settings import Settings

_modules = itertools.count()


class Recorder:
    """Stands in for :class:`ringwork.worker.Worker`: keeps the settings, runs nothing."""

    seen: list[Settings] = []

    def __init__(self, app: App) -> None:
        self.failure = None
        Recorder.seen.append(app.settings)

    def run(self) -> int:
        return 0


@pytest.fixture
def app_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh ``MODULE:APP`` (its App built at import: ``App(partitions=8, settings=...)``)."""
    for field in dataclasses.fields(Settings):
        monkeypatch.delenv(f"RINGWORK_{field.name.upper()}", raising=False)
    name = f"settings_flags_app_{next(_modules)}"
    (tmp_path / f"{name}.py").write_text(
        "from ringwork import App, Settings\n"
        f"app = App(partitions=8, settings=Settings(revoke_timeout=5.0, database_url="
        f"'sqlite:///{tmp_path / 'x.db'}'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import ringwork.worker

    monkeypatch.setattr(ringwork.worker, "Worker", Recorder)
    Recorder.seen = []
    yield f"{name}:app"
    sys.modules.pop(name, None)


def invoke(*args: str) -> Result:
    """Run ``ringwork ARGS``, as a new process would: the app module imported afresh."""
    if len(args) > 1 and ":" in args[1]:
        sys.modules.pop(args[1].partition(":")[0], None)
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def settings_of(app_spec: str, *flags: str) -> Settings:
    result = invoke("worker", app_spec, *flags)
    assert result.exit_code == 0, result.output
    (settings,) = Recorder.seen
    Recorder.seen = []
    return settings


def test_new_flags_reach_the_worker(app_spec: str) -> None:
    s = settings_of(app_spec, "--revoke-timeout", "90", "--session-timeout", "6",
                    "--heartbeat-interval", "1", "--retry-base", "0.5", "--retry-max", "60",
                    "--db-backoff-max", "2", "--poll-interval", "0.25", "--cluster", "c2",
                    "--shutdown-grace", "45", "--no-migrate")
    assert (s.revoke_timeout, s.session_timeout, s.heartbeat_interval) == (90.0, 6.0, 1.0)
    assert (s.retry_base, s.retry_max, s.db_backoff_max) == (0.5, 60.0, 2.0)
    assert (s.poll_interval, s.cluster, s.shutdown_grace, s.migrate) == (0.25, "c2", 45.0, False)
    assert settings_of(app_spec, "--grace", "7").shutdown_grace == 7.0


def test_flag_beats_variable_beats_app(app_spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # App(settings=Settings(revoke_timeout=5)) and App(partitions=8) are the app's own.
    s = settings_of(app_spec)
    assert (s.revoke_timeout, s.partitions, s.retry_base) == (5.0, 8, 1.0)
    monkeypatch.setenv("RINGWORK_REVOKE_TIMEOUT", "7")
    monkeypatch.setenv("RINGWORK_PARTITIONS", "16")
    monkeypatch.setenv("RINGWORK_RETRY_BASE", "3")
    s = settings_of(app_spec)
    assert (s.revoke_timeout, s.partitions, s.retry_base) == (7.0, 16, 3.0)
    s = settings_of(app_spec, "--revoke-timeout", "9", "--partitions", "32", "--retry-base", "4")
    assert (s.revoke_timeout, s.partitions, s.retry_base) == (9.0, 32, 4.0)
    monkeypatch.setenv("RINGWORK_MIGRATE", "0")
    assert settings_of(app_spec).migrate is False


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


BAD_FLAGS = [
    (("--revoke-timeout", "-1"), ("--revoke-timeout", "must be a positive")),
    (("--revoke-timeout", "0"), ("--revoke-timeout", "must be a positive")),
    (("--session-timeout", "nan"), ("--session-timeout", "must be a finite number")),
    (("--revoke-timeout", "inf"), ("--revoke-timeout", "must be a finite number")),
    (("--retry-base", "soon"), ("--retry-base", "'soon' is not a valid number")),
    (("--retry-max", "-3"), ("--retry-max", "must be a positive")),
    (("--retry-base", "10", "--retry-max", "5"), ("retry_max (5 s) must be at least",)),
    (("--session-timeout", "1"), ("session_timeout (1 s) must be at least 2.4 x",)),
    (("--heartbeat-interval", "2"), ("must be at least 2.4 x heartbeat_interval (2 s)",)),
    (("--concurrency", "0"), ("--concurrency", "must be at least 1")),
    (("--concurrency", "1.5"), ("--concurrency", "not a valid whole number")),
    (("--grace", "-1"), ("--grace", "must not be negative")),
    (("--poll-interval", "0"), ("--poll-interval", "must be a positive")),
    (("--metrics-port", "70000"), ("--metrics-port", "must be a port")),
    (("--cluster", ""), ("cluster must not be empty",)),
    (("--node-name", "a b"), ("--node-name", "node_name must be letters, digits")),
    (("--node-name", "-a"), ("--node-name", "starting with a letter or digit")),
    (("--node-name", "n" * 65), ("--node-name", "at most 64 characters")),
]


@pytest.mark.parametrize(("flags", "fragments"), BAD_FLAGS)
def test_a_bad_flag_is_one_line_and_nothing_starts(
    app_spec: str, flags: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    assert_one_line_error(invoke("worker", app_spec, *flags), *fragments)
    assert Recorder.seen == []


def test_a_bad_variable_is_one_line_naming_it(
    app_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RINGWORK_REVOKE_TIMEOUT", "-5")
    assert_one_line_error(invoke("worker", app_spec), "RINGWORK_REVOKE_TIMEOUT",
                          "must be a positive")
    monkeypatch.setenv("RINGWORK_REVOKE_TIMEOUT", "")  # empty: unset
    monkeypatch.setenv("RINGWORK_MIGRATE", "maybe")
    assert_one_line_error(invoke("worker", app_spec), "RINGWORK_MIGRATE='maybe'")
    assert Recorder.seen == []


def test_run_passes_the_flags_on_to_its_workers(
    app_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ringwork.supervisor

    started: list[tuple[list[str], int]] = []

    def supervise(argv: list[str], processes: int, **kwargs: Any) -> int:
        started.append((argv, processes))
        return 0

    monkeypatch.setattr(ringwork.supervisor, "supervise", supervise)
    result = invoke("run", app_spec, "--processes", "2", "--revoke-timeout", "90",
                    "--session-timeout", "6", "--retry-max", "30", "--no-migrate",
                    "--concurrency", "4")
    assert result.exit_code == 0, result.output
    ((argv, processes),) = started
    assert processes == 2
    flags = argv[argv.index(app_spec) + 1:]
    given = {name: flags[flags.index(name) + 1] for name in (
        "--revoke-timeout", "--session-timeout", "--retry-max", "--concurrency")}
    assert given == {"--revoke-timeout": "90.0", "--session-timeout": "6.0",
                     "--retry-max": "30.0", "--concurrency": "4"}
    assert "--no-migrate" in flags
    # A bad value stops `run` once, before any worker starts.
    started.clear()
    assert_one_line_error(invoke("run", app_spec, "--processes", "2", "--revoke-timeout", "-1"),
                          "--revoke-timeout")
    assert_one_line_error(invoke("run", app_spec, "--processes", "2", "--session-timeout", "1"),
                          "session_timeout")
    assert started == []


def test_worker_options_that_run_does_not_take() -> None:
    """Addresses and ports are one process's own: `run`'s workers take free loopback ports."""
    result = invoke("run", "x:y", "--processes", "2", "--bind", "tcp://127.0.0.1:7000")
    assert result.exit_code == 2 and "No such option '--bind'" in result.output


def test_run_refuses_one_node_name_for_many_workers(
    app_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker of `run` inherits RINGWORK_NODE_NAME: N processes under one name would fence
    each other, so `run` stops before it starts any."""
    import ringwork.supervisor

    started: list[int] = []
    monkeypatch.setattr(ringwork.supervisor, "supervise",
                        lambda argv, processes, **kw: started.append(processes) or 0)
    monkeypatch.setenv("RINGWORK_NODE_NAME", "web-1")
    assert_one_line_error(invoke("run", app_spec, "--processes", "2"), "node_name", "'web-1'")
    assert started == []
    assert invoke("run", app_spec, "--processes", "1").exit_code == 0  # one named worker is fine
    assert started == [1]
