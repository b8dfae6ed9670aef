"""Retention settings: the defaults a user expects, durations, and one-line errors."""

from __future__ import annotations

import pytest

from ringwork.errors import ConfigurationError
from ringwork.settings import Settings, parse_duration
from ringwork.worker.process import retention_policy


def test_defaults() -> None:
    policy = retention_policy(Settings())
    assert (policy.succeeded, policy.cancelled, policy.dead) == (86400, 7 * 86400, 30 * 86400)
    assert policy.nodes == 3600 and policy.interval == 60 and policy.batch == 1000


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("90", 90),
     ("1.5h", 5400), ("0", 0), (" 2H ", 7200)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "-1", "2y", "h", "1h30m", "nan", "inf", "1e3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigurationError, match="must be a duration") as info:
        parse_duration(text, "--older-than")
    assert "\n" not in str(info.value) and str(info.value).startswith("--older-than")


def test_environment_takes_durations_and_zero_keeps_forever() -> None:
    s = Settings().with_environment({"RINGWORK_RETAIN_DEAD": "90d",
                                     "RINGWORK_RETAIN_SUCCEEDED": "0"})
    assert s.retain_dead == 90 * 86400
    assert retention_policy(s).ages() == {"cancelled": 7 * 86400, "dead": 90 * 86400}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"retain_dead": -1.0}, "retain_dead must be a number of seconds >= 0"),
        ({"retain_succeeded": float("nan")}, "retain_succeeded must be"),
        ({"retain_nodes": 5.0}, "retain_nodes must be 0 or at least 60 s"),
        ({"housekeeping_interval": 0.0}, "housekeeping_interval must be positive"),
    ],
)
def test_bad_settings(changes: dict[str, float], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        Settings().replace(**changes)
    assert Settings().replace(retain_nodes=0.0).retain_nodes == 0  # 0 is allowed
    assert Settings().replace(session_timeout=600.0).retain_nodes == 3600  # the default fits


def test_bad_environment_is_one_line() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings().with_environment({"RINGWORK_RETAIN_NODES": "forever"})
    assert str(info.value) == ("RINGWORK_RETAIN_NODES must be a duration (a number of seconds, "
                               "or with s, m, h, d or w: 30s, 2h, 7d), not 'forever'")
