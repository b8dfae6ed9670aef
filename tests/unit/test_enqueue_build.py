"""The bulk-enqueue build path: payloads encoded once, same jobs and errors as ``build_job``."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringwork import App, Job
from ringwork.errors import PayloadError, UnknownTaskError
from ringwork.job import NewJob, encoded_payload, payload_encoder

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def make_app() -> App:
    app = App(database_url="sqlite:///nowhere/never-opened.db", partitions=32, cluster="t")

    @app.task("plain", max_attempts=3, priority=2)
    def plain(job: Job) -> None: ...

    return app


@given(json_values)
def test_payload_encoder_is_compact_json_dumps(value: Any) -> None:
    assert payload_encoder()(value) == json.dumps(value, separators=(",", ":"))


@pytest.mark.parametrize("bad", [{"x": object()}, {(1, 2): 3}, "circular"])
def test_payload_encoder_raises_what_json_dumps_raises(bad: Any) -> None:
    if bad == "circular":
        bad = []
        bad.append(bad)
    with pytest.raises((TypeError, ValueError)) as expected:
        json.dumps(bad)
    encode = payload_encoder()
    with pytest.raises(type(expected.value), match=str(expected.value)):
        encode(bad)


def test_prepared_new_job_equals_a_plain_one_and_carries_its_text() -> None:
    plain = NewJob(task="t", key="k", partition=3, payload={"a": 1}, priority=2, max_attempts=3)
    prepared = NewJob.prepared("t", "k", 3, {"a": 1}, '{"a":1}', 2, None, 3, False, None)
    assert prepared == plain and repr(prepared) == repr(plain)
    assert encoded_payload(prepared) == '{"a":1}' and encoded_payload(plain) is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        prepared.key = "x"  # type: ignore[misc]
    # A changed copy is a plain NewJob: its payload is encoded again by the store.
    assert encoded_payload(dataclasses.replace(prepared, payload=[1])) is None


def test_build_job_returns_a_plain_new_job() -> None:
    app = make_app()
    job = app.build_job("plain", "k", {"a": 1}, dedupe_key="d")
    assert encoded_payload(job) is None
    assert job == NewJob(task="plain", key="k", partition=app.partition_for("k"),
                         payload={"a": 1}, priority=2, max_attempts=3, dedupe_key="d")


def test_bulk_build_keeps_the_encoded_payload() -> None:
    app = make_app()
    job = app._build(payload_encoder(), "plain", "k", {"b": [1, "é"]}, priority=7)
    assert encoded_payload(job) == '{"b":[1,"\\u00e9"]}'
    assert job == dataclasses.replace(app.build_job("plain", "k", {"b": [1, "é"]}), priority=7)


def test_enqueue_many_validates_like_build_job_before_the_database() -> None:
    app = make_app()
    with pytest.raises(PayloadError, match=r"^payload of task 'plain' is not JSON: Object of type"):
        app.enqueue_many([{"task": "plain", "key": "a"}, {"task": "plain", "key": "b",
                                                          "payload": {"x": object()}}])
    with pytest.raises(PayloadError, match="not JSON: Circular reference detected"):
        loop: list[Any] = []
        loop.append(loop)
        app.enqueue_many([{"task": "plain", "key": "a", "payload": loop}])
    with pytest.raises(UnknownTaskError, match="unknown task 'nope'"):
        app.enqueue_many([{"task": "nope", "key": "a"}])
    with pytest.raises(PayloadError, match="key must be a string"):
        app.enqueue_many([{"task": "plain", "key": 5}])
    with pytest.raises(TypeError):
        app.enqueue_many([{"task": "plain", "key": "a", "colour": "red"}])
    assert app._store is None


@pytest.mark.parametrize("delay", [1e12, -1e12, 4e9])
def test_a_delay_past_a_century_is_refused_with_a_clear_error(delay: float) -> None:
    """SQLite's date functions give NULL past year 9999 (a NOT NULL error), PostgreSQL an
    out-of-range one: a delay that large is a mistake, said as such before any database."""
    app = App(partitions=8)

    @app.task("t")
    def t(job: object) -> None: ...

    with pytest.raises(PayloadError, match="delay must be a number of seconds up to"):
        app.build_job("t", key="k", delay=delay)
