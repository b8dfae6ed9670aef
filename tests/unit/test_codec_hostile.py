"""The codec against hostile input: ``decode`` never raises, and what it returns is sound.

Sound means: a real :class:`Message` of a known type whose every value the rest of the system can
hold -- it encodes again (no lone surrogate, no float that is not finite, no int past 64 bits),
and it round-trips to itself. Inputs are typed and nasty, not only random bytes: arbitrary JSON in
every field of every message type, lone surrogates (raw, through ``surrogatepass``, and escaped),
huge ints, NaN and Infinity literals, deep nesting, wrong types, missing and extra fields.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringwork.protocol.messages import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Codec,
    Heartbeat,
    Message,
)
from tests.unit.test_messages import SAMPLES

CLUSTER = "prod"
PARTITIONS = 64
SAMPLE_BODIES = {type(m).__name__: dataclasses.asdict(m) for m in SAMPLES}

surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1,
                     max_size=3)
nasty_text = (
    st.text(max_size=20)
    | surrogates
    | st.builds(lambda a, s, b: a + s + b, st.text(max_size=5), surrogates, st.text(max_size=5))
    | st.sampled_from(["", "\x00", "a" * 5000, "\ufeff", "🦜" * 300])
)
huge_ints = st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, 2**64, 2**1000])
nasty_ints = st.integers() | huge_ints | st.sampled_from([2**63 - 1, -(2**63), -1, 0, 64])
nasty_floats = st.floats() | st.sampled_from([1e308, -0.0, 5e-324])
scalars = st.none() | st.booleans() | nasty_ints | nasty_floats | nasty_text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(nasty_text, children, max_size=4),
    max_leaves=25,
)


def to_bytes(value: Any, ascii_only: bool) -> bytes:
    """JSON text as a peer could send it: NaN/Infinity literals allowed, surrogates raw (through
    ``surrogatepass``) or escaped, whichever ``ascii_only`` says."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def check_sound(codec: Codec, data: bytes) -> Message | None:
    message = codec.decode(data)  # must not raise
    assert codec.dropped["decode_error"] == 0, "an input slipped past the checks"
    if message is not None:
        assert isinstance(message, Message) and type(message) in MESSAGE_TYPES.values()
        again = codec.encode(message)  # every field is encodable: no surrogate, no NaN
        assert codec.decode(again) == message
    return message


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """A real message of each type with some fields replaced, removed or added."""
    kind = draw(st.sampled_from(sorted(MESSAGE_TYPES)))
    body: dict[str, Any] = dict(SAMPLE_BODIES[kind])
    for name in draw(st.lists(st.sampled_from(sorted(body)), max_size=len(body), unique=True)):
        action = draw(st.sampled_from(["replace", "replace", "delete", "wrap"]))
        if action == "replace":
            body[name] = draw(json_values)
        elif action == "delete":
            del body[name]
        else:
            body[name] = [body[name]]
    if draw(st.booleans()):
        body[draw(nasty_text)] = draw(json_values)
    env: dict[str, Any] = {"v": PROTOCOL_VERSION, "c": CLUSTER, "t": kind, "m": body}
    if draw(st.integers(0, 9)) == 0:  # now and then the envelope itself is what is wrong
        env[draw(st.sampled_from(["v", "c", "t", "m"]))] = draw(json_values)
    return to_bytes(env, draw(st.booleans()))


@given(envelopes())
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_mutated_messages_of_every_type(data: bytes) -> None:
    check_sound(Codec(CLUSTER, partitions=PARTITIONS), data)


@given(st.sampled_from(sorted(MESSAGE_TYPES)), json_values, st.booleans())
@settings(max_examples=500, deadline=None)
def test_arbitrary_json_as_the_body(kind: str, body: Any, ascii_only: bool) -> None:
    env = {"v": PROTOCOL_VERSION, "c": CLUSTER, "t": kind, "m": body}
    check_sound(Codec(CLUSTER), to_bytes(env, ascii_only))


@given(json_values, st.booleans())
@settings(max_examples=300, deadline=None)
def test_arbitrary_json_as_the_envelope(value: Any, ascii_only: bool) -> None:
    check_sound(Codec(CLUSTER), to_bytes(value, ascii_only))


@given(st.binary(max_size=2000))
@settings(max_examples=500)
def test_arbitrary_bytes(data: bytes) -> None:
    check_sound(Codec(CLUSTER), data)


def heartbeat(**fields: Any) -> dict[str, Any]:
    body = {"sender": "a", "term": 1, "incarnation": 0, "seq": 1, "sent_at": 0.5}
    body.update(fields)
    return {"v": PROTOCOL_VERSION, "c": CLUSTER, "t": "Heartbeat", "m": body}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (heartbeat(sent_at=10**400), "malformed"),  # day one: OverflowError in check_float
        (heartbeat(sent_at=-(10**400)), "malformed"),
        (heartbeat(term=10**400), "malformed"),
        (heartbeat(term=2**63), "malformed"),
        (heartbeat(seq=-(2**63) - 1), "malformed"),
        (heartbeat(sender="\ud800"), "malformed"),  # day one: UnicodeEncodeError in the node
        (heartbeat(sender="x" * 5000), "malformed"),
        (heartbeat(released=[[10**400, 1]]), "malformed"),
        (heartbeat(released=[[-1, 1]]), "out_of_range"),
        (heartbeat(released=[[PARTITIONS, 1]]), "out_of_range"),
    ],
)
def test_day_one_frames_are_dropped_with_a_reason(body: dict[str, Any], reason: str) -> None:
    codec = Codec(CLUSTER, partitions=PARTITIONS)
    for ascii_only in (True, False):
        assert check_sound(codec, to_bytes(body, ascii_only)) is None
    assert codec.dropped[reason] == 2 and sum(codec.dropped.values()) == 2


def test_extremes_within_bounds_are_accepted() -> None:
    codec = Codec(CLUSTER, partitions=PARTITIONS)
    body = heartbeat(term=2**63 - 1, seq=-(2**63), sent_at=2**63 - 1,
                     released=[[0, 2**63 - 1], [PARTITIONS - 1, 0]], sender="nöde-🦜")
    message = check_sound(codec, to_bytes(body, False))
    assert isinstance(message, Heartbeat) and message.sent_at == float(2**63 - 1)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_numbers(literal: bytes) -> None:
    data = (b'{"v":2,"c":"prod","t":"Heartbeat","m":{"sender":"a","term":1,"incarnation":0,'
            b'"seq":1,"sent_at":' + literal + b"}}")
    codec = Codec(CLUSTER)
    assert check_sound(codec, data) is None
    assert codec.dropped["malformed"] == 1


@pytest.mark.parametrize("where", ["envelope", "field"])
def test_deep_nesting(where: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    if where == "envelope":
        data = deep
    else:
        data = (b'{"v":2,"c":"prod","t":"Heartbeat","m":{"sender":"a","term":1,"incarnation":0,'
                b'"seq":1,"sent_at":0,"released":' + deep + b"}}")
    codec = Codec(CLUSTER)
    assert check_sound(codec, data) is None
    assert codec.dropped["malformed"] == 1


def test_unknown_fields_are_ignored_and_known_ones_still_checked() -> None:
    """A newer peer may add optional fields: they are ignored, not a reason to drop the message
    (one that rejected them would make a rolling upgrade flap); the known fields are checked."""
    codec = Codec(CLUSTER)
    body = {"sender": "b", "term": 1, "incarnation": 1, "seq": 1, "sent_at": 0.5,
            "from_the_future": {"x": [1, 2]}}
    env = {"v": PROTOCOL_VERSION, "c": CLUSTER, "t": "Heartbeat", "m": body}
    message = codec.decode(json.dumps(env).encode())
    assert isinstance(message, Heartbeat) and message.sender == "b"
    body["term"] = 10**400
    assert codec.decode(json.dumps(env).encode()) is None
    assert codec.dropped["malformed"] == 1
