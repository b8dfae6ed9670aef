"""``@app.task(timeout=...)``: a bad value is a one-line error at definition, never at a job."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringwork import App, Job
from ringwork.errors import ConfigurationError, RingworkError


def define(timeout: Any) -> App:
    app = App(database_url="sqlite:///never-opened.db", partitions=4)

    @app.task("t", timeout=timeout)
    def t(job: Job) -> None: ...

    return app


def assert_refused(timeout: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        define(timeout)
    text = str(info.value)
    assert isinstance(info.value, RingworkError)
    assert "\n" not in text and "timeout" in text and "'t'" in text, text


@settings(deadline=None)  # a loaded CI machine must not fail it
@given(st.floats(max_value=0.0) | st.integers(max_value=0))
def test_zero_and_negative_timeouts_are_refused(timeout: float) -> None:
    assert_refused(timeout)


@pytest.mark.parametrize("timeout", [math.nan, -math.nan, math.inf, -math.inf, 1e12])
def test_nan_infinite_and_absurd_timeouts_are_refused(timeout: float) -> None:
    assert_refused(timeout)


@settings(deadline=None)  # a loaded CI machine must not fail it
@given(st.text() | st.booleans() | st.lists(st.integers()) | st.just(b"5")
       | st.complex_numbers())
def test_timeouts_that_are_not_numbers_are_refused(timeout: Any) -> None:
    assert_refused(timeout)


@settings(deadline=None)  # a loaded CI machine must not fail it
@given(st.floats(min_value=1e-6, max_value=1e9) | st.integers(min_value=1, max_value=10**9))
def test_positive_timeouts_are_kept_as_seconds(timeout: float) -> None:
    assert define(timeout).tasks["t"].timeout == float(timeout)


def test_no_task_is_registered_when_its_timeout_is_refused() -> None:
    app = App(database_url="sqlite:///never-opened.db", partitions=4)
    with pytest.raises(ConfigurationError):
        app.task("t", timeout=0)
    assert app.tasks == {}
