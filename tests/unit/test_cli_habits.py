"""The CLI's habits (issue 13, item 5): every option a ``RINGWORK_*`` variable, shown in
``--help``; ``RINGWORK_APP`` instead of the app argument; ``--log-level`` / ``--log-format``
after the sub-command; ``run`` forwards every worker option.

Nothing starts: the worker and the supervisor are replaced by recorders (as in
test_cli_settings.py), so these tests see what a worker would have been given.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from ringwork import log
from ringwork.app import App
from ringwork.cli import cli
from ringwork.cli.worker import run, worker

_modules = itertools.count()


class Recorder:
    seen: list[App] = []

    def __init__(self, app: App) -> None:
        self.failure = None
        Recorder.seen.append(app)

    def run(self) -> int:
        return 0


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import os

    for name in list(os.environ):
        if name.startswith("RINGWORK_"):
            monkeypatch.delenv(name)
    logger = logging.getLogger("ringwork")
    saved = (logger.handlers[:], logger.level, logger.propagate, log._configured)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
    log._configured = saved[3]


@pytest.fixture
def app_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"habits_app_{next(_modules)}"
    (tmp_path / f"{name}.py").write_text(
        "from ringwork import App\n"
        f"app = App(partitions=8, cluster='habits', database_url='sqlite:///{tmp_path}/x.db')\n"
        "@app.task('greet')\n"
        "def greet(job):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import ringwork.worker

    monkeypatch.setattr(ringwork.worker, "Worker", Recorder)
    Recorder.seen = []
    yield f"{name}:app"
    sys.modules.pop(name, None)


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    for arg in args:
        if ":" in arg and "/" not in arg:
            sys.modules.pop(arg.partition(":")[0], None)
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def commands(group: click.Group = cli, path: tuple[str, ...] = ()
             ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


def variable_of(path: tuple[str, ...], option: click.Option) -> str:
    if option.envvar:
        assert isinstance(option.envvar, str)
        return option.envvar
    return "_".join(["RINGWORK", *(p.upper() for p in path), (option.name or "").upper()])


SKIP = {"help", "version"}


@pytest.mark.parametrize("path", [p for p, _ in commands()], ids="-".join)
def test_every_option_names_its_variable_in_help(path: tuple[str, ...]) -> None:
    command = dict(commands())[path]
    text = " ".join(invoke(*path, "--help", env={"COLUMNS": "200"}).output.split())
    options = [p for p in command.params if isinstance(p, click.Option) and p.name not in SKIP]
    assert options, f"{path}: no options at all?"
    for option in options:
        if option.name == "migrate" or option.name == "no_migrate":
            assert "RINGWORK_MIGRATE=0" in text, f"{path}: --no-migrate names RINGWORK_MIGRATE"
            continue
        assert f"env var: {variable_of(path, option)}" in text, (path, option.name)


def test_shared_options_keep_their_flat_names() -> None:
    by_name = {p.name: p for p in worker.params}
    assert by_name["database_url"].envvar == "RINGWORK_DATABASE_URL"
    assert by_name["node_name"].envvar == "RINGWORK_NODE_NAME"
    assert by_name["log_level"].envvar == "RINGWORK_LOG_LEVEL"
    assert by_name["log_format"].envvar == "RINGWORK_LOG_FORMAT"


def test_a_command_option_is_read_from_its_variable(app_spec: str) -> None:
    result = invoke("enqueue", app_spec, "greet", "--key", "k",
                    env={"RINGWORK_ENQUEUE_COUNT": "3"})
    assert result.exit_code == 0, result.output
    assert len(result.output.split()) == 3


def test_ringwork_help_and_version_variables_do_nothing(app_spec: str) -> None:
    result = invoke("worker", app_spec, env={"RINGWORK_HELP": "1", "RINGWORK_VERSION": "1",
                                             "RINGWORK_WORKER_HELP": "1"})
    assert result.exit_code == 0 and "Usage" not in result.output and Recorder.seen


def test_explicit_variables_still_work(app_spec: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/other.db"
    result = invoke("worker", app_spec, env={"RINGWORK_DATABASE_URL": url,
                                             "RINGWORK_NODE_NAME": "n7",
                                             "RINGWORK_LOG_LEVEL": "ERROR"})
    assert result.exit_code == 0, result.output
    (app,) = Recorder.seen
    assert app.settings.database_url == url and app.settings.node_name == "n7"
    assert logging.getLogger("ringwork").level == logging.ERROR


def test_the_app_comes_from_ringwork_app(app_spec: str) -> None:
    env = {"RINGWORK_APP": app_spec}
    assert invoke("worker", env=env).exit_code == 0 and len(Recorder.seen) == 1
    enqueued = invoke("enqueue", "greet", "--key", "k", "--count", "2", env=env)
    assert enqueued.exit_code == 0, enqueued.output
    listed = invoke("jobs", "list", "--json", env=env)
    assert listed.exit_code == 0, listed.output
    assert len(listed.output.splitlines()) == 2
    # One given on the command line wins over the variable.
    assert invoke("enqueue", app_spec, "greet", "--key", "k",
                  env={"RINGWORK_APP": "nope:app"}).exit_code == 0


def test_every_app_argument_can_come_from_ringwork_app() -> None:
    taking = {path: p for path, command in commands() for p in command.params
              if isinstance(p, click.Argument) and p.name == "app_spec"}
    assert {("worker",), ("run",), ("status",), ("enqueue",), ("jobs",), ("cron",)} <= set(taking)
    wrong = [" ".join(path) for path, p in taking.items() if p.envvar != "RINGWORK_APP"]
    assert not wrong, f"use ringwork.cli.options.app_argument on: {wrong}"


@pytest.mark.parametrize("args", [("worker",), ("enqueue", "greet", "--key", "k"),
                                  ("jobs", "list"), ("status",), ("cron",)])
def test_no_app_at_all_is_a_one_line_error(args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "RINGWORK_APP" in lines[0], result.output


def test_log_options_after_the_sub_command(app_spec: str) -> None:
    result = invoke("worker", app_spec, "--log-level", "DEBUG", "--log-format", "json")
    assert result.exit_code == 0, result.output
    assert logging.getLogger("ringwork").level == logging.DEBUG
    assert log.current_format() == "json"
    # Given after the sub-command it wins over the group's, and over the variable.
    result = invoke("--log-level", "ERROR", "worker", app_spec, "--log-level", "INFO",
                    env={"RINGWORK_LOG_LEVEL": "WARNING"})
    assert result.exit_code == 0 and logging.getLogger("ringwork").level == logging.INFO
    # Given only before, the sub-command's variable does not undo it.
    result = invoke("--log-level", "ERROR", "worker", app_spec,
                    env={"RINGWORK_LOG_LEVEL": "WARNING"})
    assert result.exit_code == 0 and logging.getLogger("ringwork").level == logging.ERROR


def test_a_bad_log_format_is_a_one_line_error(app_spec: str) -> None:
    result = CliRunner().invoke(cli, ["worker", app_spec, "--log-format", "xml"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "xml" in lines[0], result.output


#: Worker options ``run`` cannot take, and why: each is one process's own.
NOT_FOR_RUN = {
    "bind": "each worker listens on its own free loopback port",
    "advertise": "each worker's own address",
    "pub_port": "each worker's own port",
    "metrics_port": "one port cannot serve N processes (a base + index scheme would)",
    "node_name": "a static name is one worker's; N under one name would fence each other",
}


def test_run_takes_every_worker_option_but_the_per_process_ones() -> None:
    def names(command: click.Command) -> set[str]:
        return {p.name for p in command.params if isinstance(p, click.Option) and p.name}

    missing = names(worker) - names(run) - set(NOT_FOR_RUN)
    assert not missing, f"worker options `run` does not forward: {sorted(missing)}"
    assert set(NOT_FOR_RUN) <= names(worker)


def test_run_forwards_the_log_options_to_its_workers(app_spec: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import ringwork.supervisor

    seen: list[list[str]] = []
    monkeypatch.setattr(ringwork.supervisor, "supervise",
                        lambda argv, n, **kw: seen.append(argv) or 0)
    result = invoke("run", app_spec, "--processes", "2", "--log-level", "DEBUG",
                    "--log-format", "json", "--concurrency", "3")
    assert result.exit_code == 0, result.output
    (argv,) = seen
    tail = " ".join(argv[argv.index("worker"):])
    assert "--log-level DEBUG" in tail and "--log-format json" in tail
    assert "--concurrency 3" in tail
