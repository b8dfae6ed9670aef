"""The codec: every message round-trips; anything bad is dropped and counted, never raised."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringwork.protocol.messages import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Ack,
    Announce,
    ClusterState,
    Codec,
    Grant,
    Heartbeat,
    Join,
    Leave,
    LeaveAck,
    Message,
    MessageTooLarge,
    Rejoin,
    Resign,
    StateRequest,
)

SAMPLES: list[Message] = [
    Join(
        sender="a", term=3, incarnation=1, seq=7, sent_at=1.5, held=((1, 2), (5, 9)), draining=(4,)
    ),
    Heartbeat(sender="a", term=3, incarnation=1, seq=8, sent_at=2.0, released=((4, 2),)),
    Ack(
        sender="l",
        term=3,
        incarnation=1,
        seq=8,
        sent_at=2.0,
        authority=2.25,
        version=11,
        grant=((1, 2),),
        revoking=(5,),
    ),
    ClusterState(
        sender="l",
        term=3,
        version=11,
        members=(("a", 1), ("l", 0)),
        owners=((0, "a", 4), (1, None, 2)),
        revoking=(),
    ),
    Grant(sender="l", term=3, incarnation=1, version=12, grant=((1, 3),), revoking=()),
    Rejoin(sender="l", term=3, incarnation=1),
    Leave(sender="a", term=3, incarnation=2, released=((1, 3),)),
    LeaveAck(sender="l", term=3, incarnation=2),
    Announce(sender="l", term=4),
    Resign(sender="l", term=4),
    StateRequest(sender="a", term=4),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    codec = Codec("prod")
    assert codec.decode(codec.encode(message)) == message
    assert sum(codec.dropped.values()) == 0


def envelope(**overrides: object) -> bytes:
    base: dict[str, object] = {
        "v": PROTOCOL_VERSION,
        "c": "prod",
        "t": "Heartbeat",
        "m": {"sender": "a", "term": 1, "incarnation": 0, "seq": 1, "sent_at": 0.5},
    }
    base.update(overrides)
    return json.dumps(base).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe garbage", "malformed"),
        (b"[1, 2, 3]", "malformed"),
        (b'{"v": 2, "c": "prod", "t": "Heartbeat", "m": {"sender": "a"}}', "malformed"),
        (envelope(v=PROTOCOL_VERSION + 1), "wrong_version"),
        (envelope(c="other"), "foreign_cluster"),
        (envelope(t="Nope"), "unknown_type"),
        (envelope(t=["Heartbeat"]), "unknown_type"),
        (
            envelope(m={"sender": "a", "term": "1", "incarnation": 0, "seq": 1, "sent_at": 0}),
            "malformed",
        ),
        (
            envelope(m={"sender": "a", "term": True, "incarnation": 0, "seq": 1, "sent_at": 0}),
            "malformed",
        ),
        (
            b'{"v": 2, "c": "prod", "t": "Heartbeat", "m": {"sender": "a", "term": 1, '
            b'"incarnation": 0, "seq": 1, "sent_at": NaN}}',
            "malformed",
        ),
        (
            envelope(
                m={
                    "sender": "a",
                    "term": 1,
                    "incarnation": 0,
                    "seq": 1,
                    "sent_at": 0,
                    "released": [[1, 2, 3]],
                }
            ),
            "malformed",
        ),
        (b"x" * 2000, "oversized"),
    ],
)
def test_bad_input_is_dropped_and_counted(data: bytes, reason: str) -> None:
    codec = Codec("prod", max_bytes=1000)
    assert codec.decode(data) is None
    assert codec.dropped[reason] == 1
    assert sum(codec.dropped.values()) == 1


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_decode_never_raises_on_random_bytes(data: bytes) -> None:
    Codec("prod").decode(data)


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=20,
    )
)
@settings(max_examples=300)
def test_decode_never_raises_on_random_json_bodies(body: object) -> None:
    for t in MESSAGE_TYPES:
        Codec("prod").decode(envelope(t=t, m=body))


def test_encode_refuses_oversized() -> None:
    codec = Codec("prod", max_bytes=200)
    big = Ack(
        sender="l",
        term=1,
        incarnation=0,
        seq=1,
        sent_at=0.0,
        authority=1.0,
        version=1,
        grant=tuple((p, 1) for p in range(100)),
    )
    with pytest.raises(MessageTooLarge):
        codec.encode(big)


def test_full_grant_of_4096_partitions_fits_the_default_limit() -> None:
    codec = Codec("prod")
    big = Ack(
        sender="l",
        term=1,
        incarnation=0,
        seq=1,
        sent_at=0.0,
        authority=1.0,
        version=1,
        grant=tuple((p, 10_000 + p) for p in range(4096)),
    )
    assert len(codec.encode(big)) < codec.max_bytes // 10
