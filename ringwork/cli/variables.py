"""Every option of every command is also a ``RINGWORK_*`` variable, shown in ``--help``; and
``--log-level`` / ``--log-format`` are options of every command, not only of ``ringwork``.

Which name a variable has, decided once here:

* Options that mean the same thing on every command keep one flat name: the settings
  (``RINGWORK_DATABASE_URL``, ``RINGWORK_NODE_NAME``, ... -- the names ``Settings`` reads),
  ``RINGWORK_LOG_LEVEL``, ``RINGWORK_LOG_FORMAT``, ``RINGWORK_JSON``, and ``RINGWORK_APP`` for
  the ``MODULE:APP`` argument. They are given as explicit ``envvar=`` names.
* Every other option gets its variable from click's ``auto_envvar_prefix``: ``RINGWORK_`` plus
  the command path plus the option, as in ``RINGWORK_ENQUEUE_COUNT`` or
  ``RINGWORK_JOBS_LIST_LIMIT``. A flat ``RINGWORK_TASK`` would mean a filter to ``jobs list``
  and a target to ``jobs cancel``, and a flat ``RINGWORK_FORCE`` or ``RINGWORK_ALL`` would turn
  a forgotten ``export`` into a destructive default; scoped by command, a variable means one
  thing. A command added later (``dashboard``) gets variables with no work.

click parses and checks a variable's value exactly as the flag's (a bad one is a one-line
error naming the variable). :func:`equip` runs on every command the root group takes in (its
``add_command``, so a command added later is equipped too): it turns ``show_envvar`` on for each
option and gives the command the two log options.

Runs on the main thread of a ``ringwork`` process, at import and while arguments are parsed.
"""

from __future__ import annotations

import logging
from typing import Any

import click
from click.core import ParameterSource

from ringwork.log import FORMATS, configure, current_format

#: What click prefixes every variable with (``auto_envvar_prefix`` of the root context).
PREFIX = "RINGWORK"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_options(root: bool) -> list[click.Option]:
    """``--log-level`` and ``--log-format``: the root's own (read from their variables), or
    a sub-command's copy, which applies only what is given on its command line (its variable
    is the root's, already applied: reading it again would undo a root flag)."""
    common: dict[str, Any] = {"show_envvar": True}
    if not root:
        common.update(expose_value=False, callback=_apply_given, default=None)
    return [
        click.Option(["--log-level"], envvar="RINGWORK_LOG_LEVEL", show_default=root,
                     type=click.Choice(LEVELS, case_sensitive=False),
                     **({"default": "INFO"} | common if root else common),
                     help="Lowest level logged (to stderr)."),
        click.Option(["--log-format"], envvar="RINGWORK_LOG_FORMAT", show_default=root,
                     type=click.Choice(FORMATS),
                     **({"default": "logfmt"} | common if root else common),
                     help="logfmt (key=value) or json (one object a line)."),
    ]


def _apply_given(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is None or param.name is None:
        return
    if ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
        return
    logger = logging.getLogger("ringwork")
    level = logging.getLevelName(logger.level or logging.INFO)
    fmt = current_format() or "logfmt"
    if param.name == "log_level":
        level = value
    else:
        fmt = value
    configure(level, fmt)


def finish(root: click.Group) -> None:
    """The root's own options: variables shown, ``RINGWORK_VERSION`` ignored."""
    for param in root.params:
        if isinstance(param, click.Option):
            if param.name == "version":
                param.allow_from_autoenv = False  # RINGWORK_VERSION=1 must not print it
            else:
                param.show_envvar = True


def equip(command: click.Command) -> None:
    """A command (and those below it) as it joins the root group: every option shows its
    variable in ``--help``, and the log options are its own too."""
    names = {p.name for p in command.params}
    for option in log_options(root=False):
        if option.name not in names:
            command.params.append(option)
    for param in command.params:
        if isinstance(param, click.Option):
            param.show_envvar = True
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            equip(sub)


def worker_log_argv() -> list[str]:
    """This process's log options, for the workers ``ringwork run`` starts."""
    level = logging.getLevelName(logging.getLogger("ringwork").getEffectiveLevel())
    return ["--log-level", str(level), "--log-format", current_format() or "logfmt"]
