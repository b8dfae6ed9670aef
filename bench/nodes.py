"""What the benchmarks read off a node id: the worker's PID (ids are ``host-PID-xxxxxx``), so a
harness can map the owner of a partition, or the leader, to the process it started."""

from __future__ import annotations


def pid_of(node_id: str | None) -> int | None:
    """The PID in ``node_id`` (``None``: no id, or one not of that form, e.g. a named node)."""
    if not node_id:
        return None
    try:
        return int(node_id.rsplit("-", 2)[1])
    except (IndexError, ValueError):
        return None
