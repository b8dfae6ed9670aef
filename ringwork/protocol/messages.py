"""The wire messages of the ring protocol, and the one codec that turns them into bytes.

Every message is a frozen, keyword-only record with the sender's node id and the term the sender
believes current. Handlers in the core dispatch on the record's type. Who sends what:

=================  ==========================  ============================================
message            direction                   meaning
=================  ==========================  ============================================
``Join``           follower -> leader          "I follow you in this term; here is what I hold"
``Heartbeat``      follower -> leader          "I am alive" (+ partitions I finished releasing)
``Ack``            leader -> follower          lease renewal + the follower's current grant
``Grant``          leader -> follower          the follower's grant changed (pushed at once)
``Rejoin``         leader -> follower          "you are not a member (declared dead): rejoin"
``Leave``          follower -> leader          clean leave; every partition already released
``LeaveAck``       leader -> follower          leave recorded
``Announce``       leader -> anyone            "I lead this term" (after winning, or to the stale)
``Resign``         leader -> followers         leader leaves cleanly: elect a successor now
``ClusterState``   leader -> all (PUB)         numbered snapshot: members, owners, revocations
``StateRequest``   follower -> leader          "I missed a ClusterState: send me the latest"
=================  ==========================  ============================================

Encoding: JSON (stdlib), one object ``{"v": version, "c": cluster, "t": type, "m": fields}``.
Why JSON: no new dependency (msgpack is not declared), safe to parse from untrusted bytes (no
pickle), readable in a packet capture, and our messages are small -- a heartbeat is ~100 bytes,
a full grant of 4096 partitions ~40 kB -- so its cost is noise next to a database round trip.
Decoding validates every field against the record's type hints: the core never sees a malformed
record. Anything oversized, malformed, of another protocol version or another cluster is dropped
and counted in :attr:`Codec.dropped`, which the driver exposes as metrics; ``decode`` never raises.

Well-typed is not enough: the bytes come from anyone who can reach the port, so values are also
bounded to what the rest of the system can hold. Integers fit in 64 bits (a term or an epoch is
stored in a BIGINT column, and ``float(10**400)`` raises); floats are finite; strings are valid
UTF-8 (a lone surrogate cannot be encoded again, or compared with a socket identity) of at most
:data:`MAX_TEXT` characters; partition numbers, when the codec knows the partition count, lie in
``[0, partitions)`` (counted as ``out_of_range``). A property test feeds the decoder arbitrary
JSON, bytes, surrogates, huge and non-finite numbers and deep nesting for every message type.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ringwork.errors import RingworkError

#: Bumped on any incompatible change to the message set or its fields. 2: Heartbeat carries the
#: grant version it applied (degraded mode needs it), every value bounded. Fields a decoder does
#: not know are ignored from 2 on, so adding an optional field needs no bump.
PROTOCOL_VERSION = 2

#: Integers on the wire are 64-bit signed (the store's BIGINT): anything outside is malformed.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: Longest string accepted (node ids are ``host-pid-hex``; a hostname is at most 253 characters).
MAX_TEXT = 1024

#: ``((partition, epoch), ...)``: what a node may claim, or has released, at which epoch.
Pairs = tuple[tuple[int, int], ...]


class MessageTooLarge(RingworkError):
    """An outgoing message would exceed ``max_message_bytes`` (a bug or a huge partition count)."""


@dataclass(frozen=True, kw_only=True)
class Message:
    sender: str
    term: int


@dataclass(frozen=True, kw_only=True)
class Join(Message):
    """Follow the leader of ``term``. ``held`` is what the sender may still claim (the new leader
    keeps it only where the referee agrees), ``draining`` what it is still releasing."""

    incarnation: int
    seq: int
    sent_at: float
    held: Pairs = ()
    draining: tuple[int, ...] = ()
    #: 1: a named node (static membership): its partitions wait for its next process, so its
    #: link closing is no proof of anything (no fast suspicion; see protocol/links.py).
    named: int = 0


@dataclass(frozen=True, kw_only=True)
class Heartbeat(Message):
    """Proof of life. ``sent_at`` (sender's clock) comes back in the Ack: the lease starts there.
    ``released`` lists revoked partitions whose in-flight jobs are done (resent until the leader
    stops listing them as revoking, so a lost message only delays the hand-over). ``version`` is
    the last grant version the follower applied: the leader hands a revoked partition over
    without the owner's release only once the owner has heard of the revocation."""

    incarnation: int
    seq: int
    sent_at: float
    released: Pairs = ()
    version: int = -1


@dataclass(frozen=True, kw_only=True)
class Ack(Message):
    """Answer to a Join or Heartbeat. ``authority`` is how many more seconds the leader may act;
    the follower's lease never outlives it. ``grant``/``revoking`` are the follower's current
    assignment at ``version``, so a renewed lease always comes with an up-to-date grant."""

    incarnation: int
    seq: int
    sent_at: float
    authority: float
    version: int
    grant: Pairs = ()
    revoking: tuple[int, ...] = ()
    #: 1: the leader is a named node (its followers do not suspect it on its link).
    named: int = 0


@dataclass(frozen=True, kw_only=True)
class Grant(Message):
    """The follower's assignment changed at ``version`` (pushed without waiting for a heartbeat)."""

    incarnation: int
    version: int
    grant: Pairs = ()
    revoking: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Rejoin(Message):
    """This incarnation is not a member (declared dead): drop everything, rejoin as a new one."""

    incarnation: int


@dataclass(frozen=True, kw_only=True)
class Leave(Message):
    incarnation: int
    released: Pairs = ()


@dataclass(frozen=True, kw_only=True)
class LeaveAck(Message):
    incarnation: int


@dataclass(frozen=True, kw_only=True)
class Announce(Message):
    """The sender leads ``term``."""


@dataclass(frozen=True, kw_only=True)
class Resign(Message):
    """The sender stops leading ``term`` (clean shutdown): followers elect a successor now."""


@dataclass(frozen=True, kw_only=True)
class ClusterState(Message):
    """Numbered snapshot of the leader's view; a gap in ``version`` triggers a StateRequest."""

    version: int
    members: tuple[tuple[str, int], ...] = ()
    owners: tuple[tuple[int, str | None, int], ...] = ()
    revoking: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class StateRequest(Message):
    pass


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.__name__: cls
    for cls in (
        Join,
        Heartbeat,
        Ack,
        Grant,
        Rejoin,
        Leave,
        LeaveAck,
        Announce,
        Resign,
        ClusterState,
        StateRequest,
    )
}

DROP_REASONS = (
    "oversized",
    "malformed",
    "unknown_type",
    "wrong_version",
    "foreign_cluster",
    "out_of_range",
    "decode_error",  # an input the checks missed (a bug): dropped anyway; tests assert 0
)

#: Fields holding partition numbers, and how to read them out of the (decoded) field value.
_PARTITIONS_IN: dict[str, Callable[[Any], Any]] = {
    "held": lambda pairs: (p for p, _ in pairs),
    "released": lambda pairs: (p for p, _ in pairs),
    "grant": lambda pairs: (p for p, _ in pairs),
    "draining": iter,
    "revoking": iter,
    "owners": lambda owners: (row[0] for row in owners),
}


class _Invalid(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _Invalid(f"non-finite number {name}")


def _checker(tp: Any) -> Callable[[Any], Any]:
    """Build a validator/converter from a JSON value to the Python value of type ``tp``."""
    origin = typing.get_origin(tp)
    if tp is int:

        def check_int(v: Any) -> int:
            if type(v) is not int or not INT_MIN <= v <= INT_MAX:
                raise _Invalid("64-bit int expected")
            return v

        return check_int
    if tp is float:

        def check_float(v: Any) -> float:
            # math.isfinite(10**400) raises OverflowError: bound ints before converting them.
            if type(v) is int and INT_MIN <= v <= INT_MAX:
                return float(v)
            if type(v) is not float or not math.isfinite(v):
                raise _Invalid("finite number expected")
            return v

        return check_float
    if tp is str:

        def check_str(v: Any) -> str:
            if type(v) is not str or len(v) > MAX_TEXT:
                raise _Invalid("string expected")
            if not v.isascii():
                try:
                    v.encode()
                except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800" escape)
                    raise _Invalid("valid UTF-8 expected") from None
            return v

        return check_str
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        inner = _checker(next(a for a in args if a is not type(None)))
        return lambda v: None if v is None else inner(v)
    if tp == Pairs:  # the hot one (grants): a fast path

        def check_pairs(v: Any) -> Pairs:
            if type(v) is not list:
                raise _Invalid("list expected")
            out = []
            for x in v:
                if (
                    type(x) is not list
                    or len(x) != 2
                    or type(x[0]) is not int
                    or type(x[1]) is not int
                    or not INT_MIN <= x[0] <= INT_MAX
                    or not INT_MIN <= x[1] <= INT_MAX
                ):
                    raise _Invalid("[int, int] expected")
                out.append((x[0], x[1]))
            return tuple(out)

        return check_pairs
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _checker(args[0])

            def check_seq(v: Any) -> tuple[Any, ...]:
                if type(v) is not list:
                    raise _Invalid("list expected")
                return tuple(item(x) for x in v)

            return check_seq
        items = [_checker(a) for a in args]

        def check_fixed(v: Any) -> tuple[Any, ...]:
            if type(v) is not list or len(v) != len(items):
                raise _Invalid("fixed-length list expected")
            return tuple(c(x) for c, x in zip(items, v, strict=True))

        return check_fixed
    raise TypeError(f"unsupported field type {tp!r}")  # a bug in this module, found at import


_SCHEMAS: dict[type[Message], dict[str, Callable[[Any], Any]]] = {
    cls: {f.name: _checker(typing.get_type_hints(cls)[f.name]) for f in fields(cls)}
    for cls in MESSAGE_TYPES.values()
}


class Codec:
    """Encode messages to bytes and decode bytes to messages, dropping (and counting) the bad."""

    def __init__(
        self, cluster: str, *, max_bytes: int = 1 << 20, partitions: int | None = None
    ) -> None:
        self.cluster = cluster
        self.max_bytes = max_bytes
        #: When known, partition numbers outside ``[0, partitions)`` are dropped as out of range.
        self.partitions = partitions
        #: The reason of the latest drop (for the driver's rate-limited log line).
        self.last_drop: str | None = None
        self.dropped: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})

    def encode(self, message: Message) -> bytes:
        body = {f.name: getattr(message, f.name) for f in fields(message)}
        envelope = {
            "v": PROTOCOL_VERSION,
            "c": self.cluster,
            "t": type(message).__name__,
            "m": body,
        }
        data = json.dumps(envelope, separators=(",", ":"), allow_nan=False).encode()
        if len(data) > self.max_bytes:
            raise MessageTooLarge(f"{type(message).__name__} is {len(data)} bytes")
        return data

    def decode(self, data: bytes) -> Message | None:
        """The message in ``data``, or ``None`` (and a counted drop reason) if it is not one."""
        try:
            return self._decode(data)
        except Exception:  # a gap in the checks below: a bug, counted apart, never raised
            return self._drop("decode_error")

    def _decode(self, data: bytes) -> Message | None:
        if len(data) > self.max_bytes:
            return self._drop("oversized")
        try:
            envelope = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return self._drop("malformed")
        if type(envelope) is not dict:
            return self._drop("malformed")
        if envelope.get("v") != PROTOCOL_VERSION:
            return self._drop("wrong_version")
        if envelope.get("c") != self.cluster:
            return self._drop("foreign_cluster")
        kind = envelope.get("t")
        cls = MESSAGE_TYPES.get(kind) if type(kind) is str else None
        if cls is None:
            return self._drop("unknown_type")
        body = envelope.get("m")
        schema = _SCHEMAS[cls]
        if type(body) is not dict:
            return self._drop("malformed")
        # Unknown fields are ignored (a newer peer's optional additions); known ones checked.
        try:
            values = {name: check(body[name]) for name, check in schema.items() if name in body}
            message = cls(**values)
        except (_Invalid, TypeError):  # TypeError: a required field is missing
            return self._drop("malformed")
        if self.partitions is not None and not self._partitions_valid(values):
            return self._drop("out_of_range")
        return message

    def _partitions_valid(self, values: dict[str, Any]) -> bool:
        limit = self.partitions
        assert limit is not None
        for name, value in values.items():
            read = _PARTITIONS_IN.get(name)
            if read is not None and not all(0 <= p < limit for p in read(value)):
                return False
        return True

    def _drop(self, reason: str) -> Message | None:
        """Count a dropped input; always ``None`` (so ``return self._drop(...)`` reads well)."""
        self.dropped[reason] += 1
        self.last_drop = reason
        return None
