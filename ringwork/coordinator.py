"""What the worker runtime needs from whoever decides partition ownership.

The runtime claims only from ``claimable()`` and reacts to assigned / revoked / lost events.
The ZeroMQ cluster node (:class:`ringwork.node.Node`) implements it; tests may substitute their
own. A single worker is simply a cluster of one.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Mapping
from typing import Protocol

#: ``listener(kind, partitions)`` with kind in {"assigned", "revoked", "lost"}; may be called from
#: any thread.
PartitionListener = Callable[[str, frozenset[int]], None]

#: Exit code of a worker whose coordinator failed (BSD's EX_SOFTWARE: an internal error).
NODE_FAILED_EXIT = 70


def new_node_id() -> str:
    """Unique per process incarnation: a restarted process is a new member with fresh claims."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Coordinator(Protocol):
    node_id: str

    def start(self, listener: PartitionListener, wake_endpoint: str | None) -> None:
        """Join the cluster; ownership arrives later through ``listener`` events."""
        ...

    def claimable(self) -> Mapping[int, int]:
        """Partitions this node may claim from right now, with the epoch it holds for each."""
        ...

    def revoke_done(self, partitions: frozenset[int]) -> None:
        """The runtime finished the in-flight jobs of revoked partitions; hand them over."""
        ...

    def begin_leave(self) -> None:
        """Start a clean leave without waiting: revocations follow for every partition."""
        ...

    def stop(self) -> None:
        """Leave: give up ownership now so nobody waits for a timeout."""
        ...

    def failure(self) -> str | None:
        """``None`` while the coordinator works; else a one-line reason it can no longer work.

        Once set it stays set: the runtime then stops at once (in-flight jobs are abandoned; the
        next owner of their partitions re-runs them) and the process exits with
        :data:`NODE_FAILED_EXIT`, so whatever supervises it starts a fresh member.
        """
        ...
