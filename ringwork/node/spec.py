"""What the node process is built from: the one record that crosses from the worker to its child.

Its own module because both sides need it -- :mod:`ringwork.node.spawn` (the worker's side, which
starts the child) and :mod:`ringwork.node.child` (the child's side) -- and neither may import the
other's module at its top. Picklable: it crosses a spawn too. No thread of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringwork.periodic import Schedule
from ringwork.protocol.config import ProtocolConfig
from ringwork.store.retention import RetentionPolicy


@dataclass(frozen=True)
class NodeSpec:
    """Everything the child needs to build the node (picklable: it crosses a spawn too)."""

    database_url: str
    cluster: str
    partitions: int
    config: ProtocolConfig
    bind: str
    advertise: str | None
    curve_key_file: str | None
    pub_port: int
    node_id: str
    log_level: int
    #: The worker's ``--log-format``: a spawned child, which inherits no handler, logs so too.
    log_format: str = "logfmt"
    #: The node id is a ``--node-name`` (static membership).
    named: bool = False
    retention: RetentionPolicy | None = None
    periodic: tuple[Schedule, ...] = ()
