"""The worker runtime: one process's claim loop, executor, ownership and shutdown, in parts.

``from ringwork.worker import Worker``. The parts, and the thread each runs on:

* :mod:`.process` -- :class:`Worker`: assembles the parts, signals, the stop and the exit code;
* :mod:`.pump` -- the claim loop (the event loop);
* :mod:`.ledger` -- every place a claimed job can be until its outcome is written (the loop);
* :mod:`.ownership` -- assigned / revoked / lost and the revocation drain (the loop);
* :mod:`.executor` -- handlers (handler threads, or the loop for ``async def``) and partition
  callbacks (their own thread, or the loop), with one exception policy;
* :mod:`.wakeups` -- UDP nudges, LISTEN/NOTIFY, retry timers, the poll backstop (the loop);
* :mod:`.database` and :mod:`.threads` -- blocking calls off the loop, on daemon threads.
"""

from ringwork.worker.ledger import Stats
from ringwork.worker.process import Worker, cluster_node, protocol_config

__all__ = ["Stats", "Worker", "cluster_node", "protocol_config"]
