"""Reading what peers send: decode, check the sender, hand each message to the protocol.

Protocol thread only. Nothing a peer sends may stop that thread, so each frame is handled inside
a guard: a failure while handling it is counted by reason (``view()["errors"]``), logged
(rate-limited) and the next frame is read. The codec drops, and counts, malformed, oversized,
foreign-cluster and wrong-version input; a message whose claimed sender differs from the socket
identity that delivered it is dropped as ``spoofed``. A drain stops after ``DRAIN_FRAMES`` or
``DRAIN_TIME``: a flood on one socket must not keep the loop from its timers (renewing the
leader's authority, the heartcheck).

The counters are bumped here and read by the metrics thread through ``Node.view()``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import zmq

from ringwork.faults import FaultLog, reason_of
from ringwork.protocol.messages import Codec, Message

#: At most this many frames, or this many seconds, per drain of a socket.
DRAIN_FRAMES = 64
DRAIN_TIME = 0.005

#: What the protocol does with a message that passed every check.
Deliver = Callable[[Message], None]


class Inbound:
    """Turns frames from the ROUTER and the SUB into messages for the protocol, guarded."""

    def __init__(
        self, codec: Codec, node_id: str, counters: Counter[str], faults: FaultLog
    ) -> None:
        self.codec = codec
        self.codec.dropped["spoofed"] += 0  # every key exists from the start (metrics)
        self._counters = counters  # ``dropped_frames``
        self._faults = faults  # failures while handling one peer's input: counted, survived
        #: Frames dropped (by the codec's reason): logged rate-limited, counted in ``dropped``.
        self._drops = FaultLog("frame_dropped", node_id, interval=60.0, level=logging.INFO)

    def drain_router(self, router: zmq.Socket, deliver: Deliver) -> None:
        until = time.monotonic() + DRAIN_TIME
        for _ in range(DRAIN_FRAMES):
            if time.monotonic() > until:
                return  # more is waiting: the next round of the loop, after the timers
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._on_router_frames(frames, deliver)
            except Exception as exc:  # whatever a peer sent, the next frame is handled
                self._faults.record(reason_of("router", exc), exc)

    def drain_sub(self, sub: zmq.Socket, deliver: Deliver) -> None:
        until = time.monotonic() + DRAIN_TIME
        for _ in range(DRAIN_FRAMES):
            if time.monotonic() > until:
                return
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if len(frames) != 1:
                    self._counters["dropped_frames"] += 1
                    self._drops.record("frames")
                    continue
                message = self._decode(frames[0])
                if message is not None:
                    deliver(message)
            except Exception as exc:
                self._faults.record(reason_of("sub", exc), exc)

    def _on_router_frames(self, frames: list[bytes], deliver: Deliver) -> None:
        if len(frames) != 2:
            self._counters["dropped_frames"] += 1
            self._drops.record("frames")
            return
        identity, data = frames
        message = self._decode(data)
        if message is None:
            return
        if message.sender.encode("utf-8", "surrogatepass") != identity:
            self.codec.dropped["spoofed"] += 1
            self._drops.record("spoofed")
            return
        deliver(message)

    def _decode(self, data: bytes) -> Message | None:
        message = self.codec.decode(data)
        if message is None:
            self._drops.record(self.codec.last_drop or "unknown")
        return message
