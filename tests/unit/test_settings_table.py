"""Every setting has a flag, a variable and a row in docs/operations.md, and they agree.

Issue 11, item 7: ``RINGWORK_REVOKE_TIMEOUT`` existed with no flag and no doc. These tests are
what keeps that from happening again: a new ``Settings`` field fails them until it has a
``SettingFlag`` (ringwork/cli/settings_flags.py) and a row in the "Settings" table.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path
from typing import Any

import click
import pytest

from ringwork.cli.settings_flags import FLAGS, describe_default
from ringwork.cli.worker import run, worker
from ringwork.errors import ConfigurationError
from ringwork.protocol.config import ProtocolConfig
from ringwork.settings import Settings, env_var

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
FIELDS = [f.name for f in dataclasses.fields(Settings)]
BY_FIELD = {f.field: f for f in FLAGS}
FIX = "add a SettingFlag in ringwork/cli/settings_flags.py and a row in docs/operations.md"


def table_rows() -> dict[str, list[str]]:
    """The "## Settings" table of docs/operations.md: setting name -> its cells."""
    text = OPERATIONS.read_text()
    assert "\n## Settings\n" in text, "docs/operations.md has no '## Settings' section"
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = cells[0].strip("`")
        assert name not in rows, f"two rows for {name}"
        rows[name] = cells
    return rows


def options_of(command: click.Command) -> dict[str, click.Option]:
    return {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts}


def test_every_setting_has_exactly_one_flag_entry() -> None:
    names = [f.field for f in FLAGS]
    assert len(names) == len(set(names)), "a setting listed twice in FLAGS"
    missing = [n for n in FIELDS if n not in BY_FIELD]
    assert not missing, f"settings without a flag: {missing}: {FIX}"
    unknown = [n for n in names if n not in FIELDS]
    assert not unknown, f"flags for settings that do not exist: {unknown}"


@pytest.mark.parametrize("name", FIELDS)
def test_every_setting_has_a_row_with_its_flag_variable_and_default(name: str) -> None:
    rows = table_rows()
    assert name in rows, f"docs/operations.md's Settings table has no row for {name}: {FIX}"
    cells = rows[name]
    assert len(cells) == 5, f"{name}: a row has 5 cells (setting, flag, env, default, what)"
    spec = BY_FIELD[name]
    for flag in spec.flags:
        assert f"`{flag}`" in cells[1], f"{name}: flag {flag} not in {cells[1]!r}"
    assert ("*worker*" in cells[1]) == (not spec.run), f"{name}: mark worker-only flags *worker*"
    assert cells[2] == f"`{env_var(name)}`", f"{name}: env var cell {cells[2]!r}"
    default = describe_default(getattr(Settings(), name))
    assert cells[3] in (f"`{default}`", default), f"{name}: default {default}, not {cells[3]!r}"
    assert len(cells[4]) > 20, f"{name}: say what it does and when to change it"


def test_no_row_names_a_setting_that_does_not_exist() -> None:
    assert set(table_rows()) <= set(FIELDS)


@pytest.mark.parametrize("name", FIELDS)
def test_every_flag_is_an_option_of_worker_and_of_run_where_it_applies(name: str) -> None:
    spec = BY_FIELD[name]
    for command, expected in ((worker, True), (run, spec.run)):
        options = options_of(command)
        for flag in spec.flags:
            assert (flag in options) == expected, f"{flag} on `{command.name}`: {not expected}"
        if expected and not spec.switch:
            option = options[spec.flags[0]]
            assert option.envvar == env_var(name) and option.name == name


def sample(name: str) -> tuple[str, Any]:
    """A valid value other than the default, as a variable's text and as the parsed value."""
    default = getattr(Settings(), name)
    special = {"database_url": "sqlite:///other.db", "bind": "tcp://127.0.0.1:7000"}
    if isinstance(default, bool):
        return ("0", False) if default else ("1", True)
    if isinstance(default, int):
        return str(default + 1), default + 1
    if isinstance(default, float):
        return repr(default * 2), default * 2  # keeps every relation between fields
    value = special.get(name, f"other-{name}")
    return value, value


@pytest.mark.parametrize("name", FIELDS)
def test_every_variable_is_read(name: str) -> None:
    text, value = sample(name)
    assert getattr(Settings().with_environment({env_var(name): text}), name) == value


# -- values that make no sense are refused, wherever they come from ------------------------------

BAD = [
    ("revoke_timeout", -1.0, "revoke_timeout must be a positive"),
    ("revoke_timeout", 0.0, "revoke_timeout must be a positive"),
    ("session_timeout", math.nan, "session_timeout must be a finite"),
    ("retry_base", math.inf, "retry_base must be a finite"),
    ("retry_base", 0.0, "retry_base must be a positive"),
    ("retry_max", 0.5, "retry_max (0.5 s) must be at least retry_base (1 s)"),
    ("heartbeat_interval", 2.0, "must be at least 2.4 x heartbeat_interval"),
    ("session_timeout", 1.0, "must be at least 2.4 x heartbeat_interval"),
    ("shutdown_grace", -0.1, "shutdown_grace must not be negative"),
    ("db_backoff_max", 0.0, "db_backoff_max must be a positive"),
    ("poll_interval", -2.0, "poll_interval must be a positive"),
    ("concurrency", 0, "concurrency must be at least 1"),
    ("partitions", -3, "partitions must be at least 1"),
    ("metrics_port", 70000, "metrics_port must be a port"),
    ("pub_port", -2, "pub_port must be a port"),
    ("cluster", "", "cluster must not be empty"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD)
def test_bad_values_are_refused_in_code_too(name: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings().replace(**{name: value})


@pytest.mark.parametrize(("variable", "text", "message"), [
    ("RINGWORK_REVOKE_TIMEOUT", "-5", "RINGWORK_REVOKE_TIMEOUT='-5': revoke_timeout must be"),
    ("RINGWORK_SESSION_TIMEOUT", "nan", "RINGWORK_SESSION_TIMEOUT='nan': session_timeout must"),
    ("RINGWORK_RETRY_MAX", "soon", "RINGWORK_RETRY_MAX='soon' is not a valid number"),
    ("RINGWORK_CONCURRENCY", "2.5", "RINGWORK_CONCURRENCY='2.5' is not a valid whole number"),
    ("RINGWORK_MIGRATE", "maybe", "RINGWORK_MIGRATE='maybe' is not a valid boolean"),
])
def test_bad_variables_name_the_variable(variable: str, text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        Settings().with_environment({variable: text})


def test_settings_accept_exactly_the_timings_the_protocol_accepts() -> None:
    """The heartbeat/session relation is repeated in settings.py (it sits below the protocol)."""
    sessions = [0.5, 1.0, 1.2, 1.5, 2.0, 2.4, 3.0, 6.0, 10.0, 60.0]
    heartbeats = [0.05, 0.1, 0.2, 0.25, 0.4, 0.5, 0.6, 1.0, 1.25, 2.5, 4.0, 25.0]
    for session, heartbeat in itertools.product(sessions, heartbeats):
        try:
            ProtocolConfig.for_session(session_timeout=session, heartbeat_interval=heartbeat)
            protocol_ok = True
        except ConfigurationError:
            protocol_ok = False
        try:
            Settings().replace(session_timeout=session, heartbeat_interval=heartbeat)
            settings_ok = True
        except ConfigurationError:
            settings_ok = False
        assert settings_ok == protocol_ok, (session, heartbeat)
