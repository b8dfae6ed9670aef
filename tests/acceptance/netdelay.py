"""A user-space stand-in for ``tc netem delay D loss L``, for kernels built without sch_netem.

Run inside a network namespace (``ip netns exec NS python -m tests.acceptance.netdelay``) with
an iptables rule in that namespace sending the packets to delay to NFQUEUE: each queued packet
gets its verdict D seconds later (ACCEPT), or DROP with probability L. It speaks the nfnetlink
queue protocol over a raw netlink socket (no library): bind the queue, ask for metadata only,
read packet ids, send verdicts. The rule should use ``--queue-bypass`` so traffic flows
undelayed, never blocked, if this process is gone.
"""

from __future__ import annotations

import argparse
import collections
import random
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_PF_BIND = 1, 3
NFQNL_COPY_META = 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NF_DROP, NF_ACCEPT = 0, 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2


def _attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _message(kind: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    header = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0)
    return header + body


class Delayer:
    def __init__(self, queue: int, delay: float, loss: float) -> None:
        self.queue, self.delay, self.loss = queue, delay, loss
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self.pending: collections.deque[tuple[float, int, int]] = collections.deque()
        self.rng = random.Random()

    def _config(self, attrs: bytes, queue: int) -> None:
        self.seq += 1
        flags = NLM_F_REQUEST | NLM_F_ACK
        self.sock.send(_message(NFQNL_MSG_CONFIG, queue, attrs, self.seq, flags))
        reply = self.sock.recv(65536)
        kind = struct.unpack_from("=H", reply, 4)[0]
        if kind == NLMSG_ERROR and struct.unpack_from("=i", reply, 16)[0] != 0:
            raise OSError(-struct.unpack_from("=i", reply, 16)[0], "nfqueue config refused")

    def bind(self) -> None:
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_PF_BIND,
                                                     socket.AF_INET)), 0)
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)), self.queue)
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, NFQNL_COPY_META)),
                     self.queue)

    def _verdict(self, packet_id: int, verdict: int) -> None:
        self.seq += 1
        attrs = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
        self.sock.send(_message(NFQNL_MSG_VERDICT, self.queue, attrs, self.seq))

    def _receive(self, now: float) -> None:
        data = self.sock.recv(1 << 20)
        offset = 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if length < 16:
                break
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                pos, end = offset + 20, offset + length
                while pos + 4 <= end:
                    alen, atype = struct.unpack_from("=HH", data, pos)
                    if alen < 4:
                        break
                    if atype & 0x7FFF == NFQA_PACKET_HDR:
                        packet_id = struct.unpack_from("!I", data, pos + 4)[0]
                        drop = self.rng.random() < self.loss
                        self.pending.append(
                            (now + self.delay, packet_id, NF_DROP if drop else NF_ACCEPT)
                        )
                    pos += (alen + 3) & ~3
            offset += (length + 3) & ~3

    def run(self) -> None:
        while True:
            now = time.monotonic()
            while self.pending and self.pending[0][0] <= now:
                _, packet_id, verdict = self.pending.popleft()
                self._verdict(packet_id, verdict)
            timeout = max(0.0, self.pending[0][0] - now) if self.pending else 1.0
            readable, _, _ = select.select([self.sock], [], [], timeout)
            if readable:
                try:
                    self._receive(time.monotonic())
                except OSError:  # ENOBUFS: the kernel dropped some; they count as lost
                    continue


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.020)
    parser.add_argument("--loss", type=float, default=0.01)
    args = parser.parse_args()
    delayer = Delayer(args.queue, args.delay, args.loss)
    delayer.bind()
    print("netdelay ready", flush=True)
    sys.stdout.flush()
    delayer.run()


if __name__ == "__main__":
    main()
