"""The settings flags of ``ringwork worker`` and ``ringwork run``: one per ``Settings`` field.

Why a list rather than options written out on each command: a setting reachable only through an
undocumented variable (``RINGWORK_REVOKE_TIMEOUT`` was one) is a setting nobody finds. Every
field of :class:`~ringwork.settings.Settings` has an entry here, each entry becomes an option of
``worker`` (and of ``run``, which passes it on to every worker it starts), and
tests/unit/test_settings_table.py checks that each field has an entry, an option on the commands
and a row in the table of docs/operations.md, so a new field without them fails a test.

A flag's text is parsed and checked by :mod:`ringwork.settings` itself (the same code that reads
the variables), so a flag, its variable and ``App(...)`` accept exactly the same values; a bad
one is a one-line error (:mod:`ringwork.cli.group`).

Runs on the main thread of a ``ringwork`` process, while a command's arguments are parsed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from ringwork.app import App
from ringwork.cli.options import load_app
from ringwork.errors import ConfigurationError
from ringwork.settings import Settings, env_var, field_problem, parse_setting

F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS = Settings()


@dataclass(frozen=True)
class SettingFlag:
    """How one setting is given on the command line."""

    field: str
    help: str
    metavar: str = "SECONDS"
    #: The option's names; the first is the one documented. Default: the field with dashes.
    names: tuple[str, ...] = ()
    #: Also an option of ``ringwork run`` (passed on to its workers). Addresses and ports are
    #: one process's own, so they are ``worker`` options only.
    run: bool = True

    @property
    def flags(self) -> tuple[str, ...]:
        return self.names or ("--" + self.field.replace("_", "-"),)

    @property
    def env_var(self) -> str:
        return env_var(self.field)

    @property
    def switch(self) -> bool:
        """A flag without a value (``--no-migrate``): it turns a default-on setting off."""
        return isinstance(getattr(DEFAULTS, self.field), bool)

    def option(self) -> Callable[[F], F]:
        default = describe_default(getattr(DEFAULTS, self.field))
        if self.switch:  # its variable is read by Settings (RINGWORK_MIGRATE=0)
            return click.option(*self.flags, self.field, is_flag=True, allow_from_autoenv=False,
                                help=f"{self.help} Env: {self.env_var}=0.")
        return click.option(
            *self.flags, self.field, type=SettingValue(self.field), metavar=self.metavar,
            envvar=self.env_var, show_envvar=True,
            help=f"{self.help} Default: the app's, else {default}.",
        )

    def value(self, given: Any) -> Any:
        """The override for ``App.configure`` (``None``: not given)."""
        if self.switch:
            return (not getattr(DEFAULTS, self.field)) if given else None
        return given

    def argv(self, value: Any) -> list[str]:
        """The same override as arguments of a ``ringwork worker`` command line."""
        if value is None:
            return []
        return [self.flags[0]] if self.switch else [self.flags[0], str(value)]


def describe_default(value: Any) -> str:
    """A default as the help and the table in docs/operations.md show it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"  # 2592000, not 2.592e+06
    if value == "":
        return "none"
    return str(value)


class SettingValue(click.ParamType):
    """A flag's text, parsed and checked as its setting's variable would be."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.name = type(getattr(DEFAULTS, field)).__name__

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            parsed = parse_setting(self.field, value, "")
        except ConfigurationError as exc:
            self.fail(str(exc), param, ctx)
        problem = field_problem(self.field, parsed)
        if problem:
            self.fail(problem, param, ctx)
        return parsed


FLAGS: tuple[SettingFlag, ...] = (
    SettingFlag("database_url", "SQLAlchemy URL (sqlite:///file.db or postgresql://...).",
                metavar="URL"),
    SettingFlag("cluster", "Consumer group name; several clusters can share a database.",
                metavar="NAME"),
    SettingFlag("partitions", "Partition count, fixed when the cluster is created.",
                metavar="N"),
    SettingFlag("concurrency", "Jobs in flight per worker process.", metavar="N"),
    SettingFlag("poll_interval", "Backstop poll for due jobs when no wake-up arrives."),
    SettingFlag("shutdown_grace", "Seconds in-flight jobs get on SIGTERM/SIGINT before the "
                "worker exits anyway.", names=("--grace", "--shutdown-grace")),
    SettingFlag("migrate", "Do not apply pending migrations; fail if behind.",
                names=("--no-migrate",)),
    SettingFlag("retry_base", "First retry delay of a failed job; doubles per attempt, "
                "with jitter."),
    SettingFlag("retry_max", "Longest retry delay of a failed job."),
    SettingFlag("db_backoff_max", "Longest pause between attempts to reach a database that "
                "is down."),
    SettingFlag("heartbeat_interval", "How often members heartbeat the leader (at most "
                "session-timeout / 2.4)."),
    SettingFlag("session_timeout", "Seconds of silence before a member is declared dead."),
    SettingFlag("revoke_timeout", "How long the leader waits for a moving partition's owner "
                "to finish its jobs before handing the partition over anyway."),
    SettingFlag("bind", "Address this worker's ROUTER listens on, tcp://HOST:PORT; the PUB "
                "socket listens on PORT+1 (see --pub-port).", metavar="URL", run=False),
    SettingFlag("advertise", "Host (or tcp://HOST:PORT) other processes use to reach this "
                "worker.", metavar="HOST", run=False),
    SettingFlag("pub_port", "Port of the PUB socket on the bind host (-1: the --bind port + 1; "
                "0: any free port).", metavar="PORT", run=False),
    SettingFlag("metrics_port", "Serve Prometheus metrics on this port of the bind host (-1: "
                "off; 0: any free port, logged as event=metrics_serving). Under `run`, worker "
                "N serves on PORT + N.", metavar="PORT"),
    SettingFlag("retain_succeeded", "Delete succeeded jobs this long after they finished "
                "(30s, 2h, 7d or seconds; 0 keeps them). The leader's setting is in force.",
                metavar="AGE"),
    SettingFlag("retain_cancelled", "Same, for cancelled jobs.", metavar="AGE"),
    SettingFlag("retain_dead", "Same, for dead jobs.", metavar="AGE"),
    SettingFlag("retain_nodes", "Delete the registry rows of nodes not seen this long "
                "(0 keeps them; else at least 60 s and 2 x session-timeout).", metavar="AGE"),
    SettingFlag("housekeeping_interval", "How often the leader looks for finished jobs and "
                "node rows past their retention."),
    SettingFlag("node_name", "Static membership: this worker's stable name (its node id). "
                "Restarted under the same name within --session-timeout, it gets its "
                "partitions back with no rebalance.", metavar="NAME", run=False),
    SettingFlag("curve_key_file", "Cluster key pair from `ringwork keys`: encrypt and "
                "authenticate sockets.", metavar="PATH"),
)


def flags_of(command: str) -> tuple[SettingFlag, ...]:
    """The settings flags of ``command`` (``"worker"`` or ``"run"``)."""
    return tuple(f for f in FLAGS if command == "worker" or f.run)


def settings_options(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the settings flags of ``command``; the function receives them as ``settings``, a
    dict of ``App.configure`` overrides (``None``: not given)."""
    chosen = flags_of(command)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            given = {f.field: f.value(kwargs.pop(f.field)) for f in chosen}
            return fn(*args, settings=given, **kwargs)

        for flag in reversed(chosen):
            call = flag.option()(call)
        return call

    return decorate


def configured_app(spec: str, settings: dict[str, Any]) -> App:
    """``MODULE:APP`` with the flags applied (and checked together: one-line errors)."""
    rest = dict(settings)
    database_url = rest.pop("database_url", None)
    no_migrate = rest.pop("migrate", None) is False
    return load_app(spec, database_url, no_migrate, **rest)


def worker_argv(settings: dict[str, Any]) -> list[str]:
    """The flags given to ``ringwork run``, as arguments for each worker it starts."""
    by_field = {f.field: f for f in FLAGS}
    return [arg for name, value in settings.items() for arg in by_field[name].argv(value)]
