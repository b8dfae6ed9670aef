"""The node: the cluster member that owns the sockets and the clock and drives the protocol.

The only package that imports zmq. Its modules, by what they hold and where they run:

* :mod:`~ringwork.node.driver` -- :class:`Node`, the protocol thread (``ringwork-node``): polls
  the sockets and a wake-up, feeds the sans-IO :class:`~ringwork.protocol.core.Core`;
* :mod:`~ringwork.node.wake` -- how other threads wake that thread's poll at once;
* :mod:`~ringwork.node.inbound`, :mod:`~ringwork.node.actions` -- what arrives (decoded,
  guarded) and what the core decided (sent, published, called, reported), protocol thread;
* :mod:`~ringwork.node.sockets`, :mod:`~ringwork.node.curve`, :mod:`~ringwork.node.peers` --
  our ROUTER, PUB and SUB and their binding, the CURVE key pair, the DEALER to each peer;
* :mod:`~ringwork.node.referee_calls`, :mod:`~ringwork.node.registry` -- the referee
  operations on their pool thread (``ringwork-ref``), the registry over the SQL store;
* :mod:`~ringwork.node.joinwatch` -- saying why a node cannot join;
* :mod:`~ringwork.node.process` (the worker's side), :mod:`~ringwork.node.spawn` (starting the
  child), :mod:`~ringwork.node.spec` (what it is built from), :mod:`~ringwork.node.child`
  (the child's side, ``python -m ringwork.node.child FD``)
  -- the node in an OS process of its own, :class:`NodeProcess`, which is how a worker runs it.
"""

from ringwork.node.curve import CurveKeys
from ringwork.node.driver import Node
from ringwork.node.process import NodeProcess

__all__ = ["CurveKeys", "Node", "NodeProcess"]
