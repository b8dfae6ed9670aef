"""Fast suspicion: what the operating system says about our connection to each peer.

When a process dies and its host stays up, the host's kernel closes the process's TCP
connections at once (a FIN or a reset), and every later attempt to reconnect to its listening
port is refused (``ECONNREFUSED``): nothing listens there any more. A live node never closes its
ROUTER while it is a member, and a network cut or a paused process produces neither signal (no
packet comes back at all), so *a connection closed by the peer, then at least*
``LINK_REFUSALS`` *refused reconnects, for* ``ProtocolConfig.link_confirm`` *seconds, with no
successful reconnect and no message from that peer since the window began* is taken as proof
enough that the process behind it is gone. A connection dropped and restored within the window
(a reset by a middlebox, ``ss -K``) clears the suspicion when the reconnect succeeds; a message
from the peer starts the window over.

The driver translates its socket monitor's events into :class:`~ringwork.protocol.events.
LinkChanged` (``closed``, ``refused``, ``connected``); this object keeps, per peer, when the
link went down and how many reconnects were refused since, and says whether the suspicion is
confirmed. Who acts on it: the leader's heartcheck (the member is declared dead without waiting
for the session timeout), and a follower (its leader is treated as gone: it polls and, if it is
next in join order, claims the term at once; the takeover does not wait out the dead leader's
authority). What it never changes: the fences. A job is re-queued only on the old rule (not a
member and its registry row ``session_timeout`` old), and every claim is checked against the
partition's epoch, so a wrong verdict (a firewall that answers a live node's port with resets)
costs a rebalance, never a double claim in the database. See docs/protocol.md, "Fast
suspicion".

Runs on the driver's thread, inside ``Core.handle`` (see :mod:`ringwork.protocol.core`); no
clock, no socket.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

#: Refused reconnects needed (on top of the closed connection) before a suspicion is confirmed:
#: one could be a race with a process that is still binding; two, spaced by the reconnect
#: interval, cannot.
LINK_REFUSALS = 2
#: More links down together than this, and none is taken for proof (:meth:`Links.confirmed`).
MAX_DOWN_AT_ONCE = 1


@dataclass
class _Down:
    since: float
    refused: int = 0


class Links:
    """Per peer: is our connection to it down, refused since when, confirmed dead?"""

    def __init__(self, confirm: float) -> None:
        self.confirm = confirm  # ProtocolConfig.link_confirm (inf: fast suspicion off)
        self._down: dict[str, _Down] = {}

    def changed(self, now: float, peer: str, change: str) -> None:
        """``closed``: the peer closed an established connection; ``refused``: a reconnect
        attempt failed; ``connected``: a connection (re)established."""
        if change == "closed":
            self._down.setdefault(peer, _Down(now))
        elif change == "refused":
            down = self._down.get(peer)
            if down is not None:
                down.refused += 1
        elif change == "connected":
            self._down.pop(peer, None)

    def heard(self, now: float, peer: str) -> None:
        """A message from ``peer`` arrived: it was alive when it sent it. The suspicion starts
        over from here (the window and the refusals), but the link stays down until it
        reconnects: the message may have been on the wire when the process died (it came on
        the peer's own connection to us, not on the one that closed)."""
        down = self._down.get(peer)
        if down is not None:
            self._down[peer] = _Down(now)

    def dead(self, now: float, peer: str | None) -> bool:
        """Whether ``peer``'s death is confirmed by its link (see the module docstring)."""
        down = self._down.get(peer) if peer is not None else None
        return (
            down is not None
            and down.refused >= LINK_REFUSALS
            and now >= down.since + self.confirm
        )

    def confirmed(self, now: float, among: Collection[str] | None = None) -> list[str]:
        """Every peer (of ``among``, if given) whose death its link confirms, sorted -- none
        while more than :data:`MAX_DOWN_AT_ONCE` of those links are down together: a fault on
        our own side (a firewall reload, a restarting proxy) breaks every link at once and
        looks like every peer dying, and the slow path (silence for the session timeout, a
        stale registry row) decides then. Several processes killed at once fail over slowly."""
        down = [p for p in self._down if among is None or p in among]
        if len(down) > MAX_DOWN_AT_ONCE:
            return []
        return sorted(p for p in down if self.dead(now, p))

    def down_since(self, peer: str | None) -> float:
        """When the link to ``peer`` went down (``inf``: it is not down)."""
        down = self._down.get(peer) if peer is not None else None
        return down.since if down is not None else math.inf

    def deadlines(self) -> list[float]:
        """When a suspicion with enough refusals becomes confirmed (a Tick is due then)."""
        return [
            d.since + self.confirm for d in self._down.values() if d.refused >= LINK_REFUSALS
        ]

    def forget(self, peer: str) -> None:
        self._down.pop(peer, None)
