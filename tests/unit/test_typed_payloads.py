"""Typed payloads at the two doors: enqueue checks and dumps, the handler gets the type back.

Each case runs twice, with pydantic checking and with ringwork's own dataclass checker, since a
user may have either; hostile values (huge and non-finite numbers, surrogates, deep nesting,
wrong types) must give a one-line PayloadError or a faithful round trip, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringwork import App, Job
from ringwork.errors import ConfigurationError, PayloadError, StoredPayloadError
from ringwork.handles import TaskHandle
from ringwork.payloads import PayloadType, payload_type_of
from ringwork.retry import Retry


@dataclass
class Size:
    w: int
    h: int = 1


@dataclass
class Resize:
    url: str
    size: Size
    tags: list[str] = field(default_factory=list)
    fit: Literal["crop", "pad"] = "crop"
    note: str | None = None
    sizes: dict[str, Size] = field(default_factory=dict)


class Charge(pydantic.BaseModel):
    amount: int
    currency: str = "EUR"


CHECKERS = [pytest.param(True, id="pydantic"), pytest.param(False, id="builtin")]


@pytest.mark.parametrize("use_pydantic", CHECKERS)
def test_an_instance_and_a_fitting_mapping_store_the_same_json(use_pydantic: bool) -> None:
    kind = PayloadType("resize", Resize, use_pydantic=use_pydantic)
    value = Resize("u", Size(2), ["a"], "pad", None, {"big": Size(9, 9)})
    stored = kind.dump(value)
    assert stored == {"url": "u", "size": {"w": 2, "h": 1}, "tags": ["a"], "fit": "pad",
                      "note": None, "sizes": {"big": {"w": 9, "h": 9}}}
    assert kind.dump(json.loads(json.dumps(stored))) == stored
    assert kind.load(json.loads(json.dumps(stored))) == value


@pytest.mark.parametrize("use_pydantic", CHECKERS)
@pytest.mark.parametrize("bad, where", [
    ({"size": {"w": 1}}, "url"),  # a required field missing
    ({"url": "u", "size": {"w": 1}, "widht": 3}, "widht"),  # a misspelt field
    ({"url": "u", "size": {"w": 1, "zz": 0}}, "size.zz"),  # ... one level down
    ({"url": "u", "size": {"w": [1]}}, "size.w"),  # a wrong type
    ({"url": "u", "size": {"w": 1}, "tags": "abc"}, "tags"),
    ({"url": "u", "size": {"w": 1}, "fit": "stretch"}, "fit"),
    ({"url": "u", "size": {"w": 1}, "sizes": {"x": {"h": 2}}}, "sizes"),
    (None, "(payload)"), (5, "(payload)"), ("text", "(payload)"), ([1, 2], "(payload)"),
])
def test_a_payload_that_does_not_fit_is_one_line_naming_the_field(
        use_pydantic: bool, bad: Any, where: str) -> None:
    kind = PayloadType("resize", Resize, use_pydantic=use_pydantic)
    with pytest.raises(PayloadError) as caught:
        kind.dump(bad)
    message = str(caught.value)
    assert message.startswith("payload of task 'resize' does not fit Resize: ")
    assert "\n" not in message and where in message
    with pytest.raises(StoredPayloadError):
        kind.load(bad)


def test_a_pydantic_model_keeps_its_own_rules() -> None:
    kind = PayloadType("charge", Charge)
    assert kind.dump(Charge(amount=5)) == {"amount": 5, "currency": "EUR"}
    assert kind.dump({"amount": 5, "extra": 1}) == {"amount": 5, "currency": "EUR"}  # ignore
    assert kind.load({"amount": 7}) == Charge(amount=7)
    with pytest.raises(PayloadError, match="amount: Input should be a valid integer"):
        kind.dump({"amount": "seven"})


def test_a_pydantic_model_without_pydantic_and_a_non_class_are_definition_errors() -> None:
    with pytest.raises(ConfigurationError, match="pydantic is not installed"):
        PayloadType("charge", Charge, use_pydantic=False)
    for not_a_class in (dict, int, "Resize", Resize("u", Size(1))):
        with pytest.raises(ConfigurationError, match="dataclass or a pydantic model"):
            PayloadType("t", not_a_class)  # type: ignore[arg-type]


@dataclass
class Tree:
    children: list[Tree] = field(default_factory=list)


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(3000):
        child: dict[str, Any] = {}
        node["children"] = [child]
        node = child
    builtin = PayloadType("tree", Tree, use_pydantic=False)
    with pytest.raises(PayloadError, match="nested deeper than"):
        builtin.dump(deep)
    with pytest.raises(PayloadError):  # pydantic's own recursion guard, as a one-line error
        PayloadType("tree", Tree, use_pydantic=True).dump(deep)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize("use_pydantic", CHECKERS)
@settings(max_examples=150, deadline=None)
@given(data=st.dictionaries(st.sampled_from(["url", "size", "tags", "fit", "note", "x", "\ud800"]),
                            json_values, max_size=6))
def test_hostile_mappings_fit_or_fail_in_one_line(use_pydantic: bool, data: dict[str, Any]) -> None:
    kind = PayloadType("resize", Resize, use_pydantic=use_pydantic)
    try:
        stored = kind.dump(data)
    except PayloadError as exc:
        assert "\n" not in str(exc)
        return
    loaded = kind.load(stored)  # what was accepted comes back as the type
    assert isinstance(loaded, Resize) and isinstance(loaded.size, Size)


@settings(max_examples=100, deadline=None)
@given(w=st.integers(min_value=-(2**70), max_value=2**70), url=st.text(),
       ratio=st.floats(allow_nan=False))
def test_instances_round_trip_through_json(w: int, url: str, ratio: float) -> None:
    @dataclass
    class Scaled:
        url: str
        w: int
        ratio: float

    for use in (True, False):
        kind = PayloadType("s", Scaled, use_pydantic=use)
        value = Scaled(url, w, ratio)
        back = kind.load(json.loads(json.dumps(kind.dump(value))))
        assert back.url == url and back.w == w
        assert back.ratio == ratio or (math.isinf(ratio) and back.ratio == ratio)


def test_the_handler_annotation_names_the_type() -> None:
    def resize(job: Job[Resize]) -> None: ...
    def plain(job: Job) -> None: ...
    def anything(job: Job[Any]) -> None: ...
    def untyped(job): ...  # type: ignore[no-untyped-def]

    assert payload_type_of("resize", resize) is Resize
    assert payload_type_of("plain", plain) is None
    assert payload_type_of("any", anything) is None
    assert payload_type_of("untyped", untyped) is None


def test_an_unresolvable_job_annotation_is_a_definition_error() -> None:
    @dataclass
    class Local:
        n: int

    def handler(job: Job[Local]) -> None: ...  # a string annotation naming a local class

    app = App(database_url="sqlite://", partitions=4)
    with pytest.raises(ConfigurationError, match="pass payload_type="):
        app.task("t")(handler)
    app.task("t", payload_type=Local)(handler)  # the explicit way works
    assert app.tasks["t"].payload_type is not None


def test_the_task_handle_calls_the_handler_and_enqueues_by_name() -> None:
    app = App(database_url="sqlite://", partitions=4)
    got: list[Any] = []

    @app.task("resize")
    def resize(job: Job[Resize]) -> str:
        """Resize one image."""
        got.append(job.payload)
        return "done"

    assert isinstance(resize, TaskHandle) and resize.name == "resize"
    assert resize.__name__ == "resize" and resize.__doc__ == "Resize one image."
    job = Job(id=1, task="resize", key="k", partition=0, payload=Resize("u", Size(1)), attempt=1)
    assert resize(job) == "done" and got == [job.payload]  # a direct call is the handler's
    with app.testing() as t:
        first = resize.enqueue("k", Resize("a", Size(3)))
        second, third = resize.enqueue_many([{"key": "k", "payload": {"url": "b",
                                                                      "size": {"w": 4}}},
                                             {"key": "j", "payload": Resize("c", Size(5))}])
        with pytest.raises(PayloadError, match="size: "):
            resize.enqueue("k", {"url": "x"})
        assert app.get_job(first).payload == {"url": "a", "size": {"w": 3, "h": 1}, "tags": [],
                                              "fit": "crop", "note": None, "sizes": {}}
        t.run_pending()
        assert [j.state for j in t.jobs(task="resize")] == ["succeeded"] * 3
    assert got[1:] == [Resize("a", Size(3)), Resize("b", Size(4)), Resize("c", Size(5))]
    assert {first, second, third} == {j for j in (first, second, third)}


def test_a_stored_payload_that_no_longer_fits_is_dead_at_once() -> None:
    app = App(database_url="sqlite://", partitions=4)
    ran: list[Any] = []

    @app.task("resize", max_attempts=5, retry=Retry(base=0.01))
    def resize(job: Job[Resize]) -> None:
        ran.append(job)

    with app.testing() as t:
        # Written past the check (by hand, or by an older version of the type).
        job_id = app.store.enqueue([dataclasses.replace(
            app.build_job("resize", "k", {"url": "u", "size": {"w": 1}}),
            payload={"url": 3})])[0]
        t.run_pending()
        record = app.get_job(job_id)
    assert record is not None and record.state == "dead" and record.attempts == 1
    assert "StoredPayloadError: payload of task 'resize' does not fit Resize" in (
        record.last_error or "")
    assert ran == []


def test_async_and_transactional_handlers_get_the_type_too() -> None:
    app = App(database_url="sqlite://", partitions=4)
    got: list[Any] = []

    @app.task("charge")
    async def charge(job: Job[Charge]) -> None:
        got.append(job.payload)

    @app.task("tx", transactional=True)
    def tx(job: Job[Size], conn: Any) -> None:
        got.append(job.payload)

    with app.testing() as t:
        charge.enqueue("k", {"amount": 3})
        tx.enqueue("k", Size(8))
        t.run_pending()
    assert got == [Charge(amount=3), Size(8, 1)]
