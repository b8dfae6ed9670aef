"""What several commands share: the ``--database-url``/``--no-migrate`` options and loading the
``MODULE:APP`` argument (now, for a command; on first use, for a group's subcommands).

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
    return click.option(
        "--no-migrate", is_flag=True, help="Do not apply pending migrations; fail if behind."
    )(fn)


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
