"""What several commands share: the ``--database-url``/``--no-migrate``/``--json`` options, the
``MODULE:APP`` argument (or ``RINGWORK_APP``) and loading it (now, for a command; on first use,
for a group's subcommands).

Runs on the main thread of a ``ringwork`` process, before and while a command runs.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import click

from ringwork.app import App
from ringwork.errors import AppImportError

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")


def database_option(fn: F) -> F:
    return click.option(
        "--database-url",
        envvar="RINGWORK_DATABASE_URL",
        help="SQLAlchemy URL (sqlite:///file.db or postgresql://...). "
        "Env: RINGWORK_DATABASE_URL. Default: the app's, else sqlite:///ringwork.db.",
    )(fn)


def migrate_option(fn: F) -> F:
    # Its variable is the setting's, read by Settings (no RINGWORK_<CMD>_NO_MIGRATE besides).
    return click.option(
        "--no-migrate", is_flag=True, allow_from_autoenv=False,
        help="Do not apply pending migrations; fail if behind. Env: RINGWORK_MIGRATE=0.",
    )(fn)


def json_option(help: str) -> Callable[[F], F]:
    """``--json``: the same variable (``RINGWORK_JSON``) for every command that prints a table."""
    return click.option("--json", "as_json", is_flag=True, envvar="RINGWORK_JSON",
                        show_envvar=True, help=help)


#: The variable that stands for the ``MODULE:APP`` argument of every command taking one.
APP_VARIABLE = "RINGWORK_APP"
HELP = frozenset({"-h", "--help"})
NO_APP = f"no app given: pass MODULE:APP (e.g. workers.example:app) or set {APP_VARIABLE}"


def _need_app(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    if value is None and not ctx.resilient_parsing:
        raise click.ClickException(NO_APP)
    return value or ""


def app_argument(fn: F) -> F:
    """The ``MODULE:APP`` argument; when it is left out, ``RINGWORK_APP`` (click reads it)."""
    return click.argument("app_spec", metavar="[MODULE:APP]", required=False,
                          envvar=APP_VARIABLE, callback=_need_app)(fn)


class _AppFirst:
    """A command whose ``[MODULE:APP]`` comes before other positional words (``enqueue APP
    TASK``, ``jobs APP list``): with the app left out, click would take the next word for it.
    When the words say it was left out, the value of ``RINGWORK_APP`` goes in its place."""

    def app_left_out(self, words: list[str]) -> bool:
        raise NotImplementedError

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        command: Any = self
        spots = _positional_spots(command, ctx, args)
        if self.app_left_out([args[i] for i in spots]):
            param = next(p for p in command.params if p.name == "app_spec")
            value = param.resolve_envvar_value(ctx)
            if not value and HELP.isdisjoint(args):
                raise click.ClickException(NO_APP)
            value = value or "MODULE:APP"  # only for --help: nothing is loaded
            at = spots[0] if spots else len(args)
            args = [*args[:at], value, *args[at:]]
        result: list[str] = super().parse_args(ctx, args)  # type: ignore[misc]
        return result


class AppFirstCommand(_AppFirst, click.Command):
    """``enqueue [MODULE:APP] TASK``: one word alone is the task."""

    def app_left_out(self, words: list[str]) -> bool:
        return len(words) == 1


class AppFirstGroup(_AppFirst, click.Group):
    """``jobs [MODULE:APP] COMMAND``: a first word that names a sub-command is one."""

    def app_left_out(self, words: list[str]) -> bool:
        return bool(words) and words[0] in self.commands


def _positional_spots(command: click.Command, ctx: click.Context, args: list[str]) -> list[int]:
    """Where the positional words of ``args`` are (option values skipped)."""
    takes_value: dict[str, bool] = {}
    for p in command.get_params(ctx):
        if isinstance(p, click.Option):
            for name in (*p.opts, *p.secondary_opts):
                takes_value[name] = not (p.is_flag or p.count)
    spots: list[int] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            spots.extend(range(i + 1, len(args)))
            break
        if word.startswith("-") and word != "-":
            if "=" not in word and takes_value.get(word, False):
                i += 1
        else:
            spots.append(i)
            if isinstance(command, click.Group):
                break  # the rest belongs to the sub-command
        i += 1
    return spots


def load_app(
    spec: str, database_url: str | None = None, no_migrate: bool = False, **overrides: Any
) -> App:
    """Import ``MODULE:APP`` (from the working directory too) and apply CLI overrides."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise AppImportError(f"expected MODULE:APP (e.g. workers.example:app), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise AppImportError(f"cannot import {module_name!r}: {reason}") from None
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise AppImportError(f"{spec!r} is not a ringwork App (found {type(app).__name__})")
    app.configure(database_url=database_url, migrate=False if no_migrate else None, **overrides)
    return app


class AppRef:
    """A group's ``MODULE:APP`` argument, imported only once a subcommand runs.

    Click runs a group's callback before it parses the subcommand's options, so a group that
    imported the app there made ``ringwork jobs x:y list --help`` fail on ``x``. The group
    keeps this reference instead; a subcommand taking the app (:func:`pass_app`) loads it.
    """

    def __init__(self, spec: str, database_url: str | None, no_migrate: bool) -> None:
        self.spec = spec
        self.database_url = database_url
        self.no_migrate = no_migrate
        self._app: App | None = None

    def get(self) -> App:
        if self._app is None:
            self._app = load_app(self.spec, self.database_url, self.no_migrate)
        return self._app

    def close(self) -> None:
        """Release the app if a subcommand loaded it (the group's context calls this)."""
        if self._app is not None:
            self._app.close()


def pass_app(fn: Callable[Concatenate[App, P], R]) -> Callable[P, R]:
    """Call ``fn`` with the enclosing group's app (loaded now) as its first argument."""

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        ref = click.get_current_context().find_object(AppRef)
        if ref is None:
            raise RuntimeError(f"{fn.__name__} must run under a group that sets an AppRef")
        return fn(ref.get(), *args, **kwargs)

    return functools.update_wrapper(call, fn)
