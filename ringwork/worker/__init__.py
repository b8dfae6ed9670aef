"""The worker runtime: one process's claim loop, executor, ownership and shutdown, in parts.

``from ringwork.worker import Worker``. The parts, and the thread each runs on:

* :mod:`.process` -- :class:`Worker`: assembles the parts, signals, the stop and the exit code;
* :mod:`.pump` -- the claim loop (the event loop);
* :mod:`.ledger` -- every place a claimed job can be until its outcome is written (the loop);
* :mod:`.ownership` -- assigned / revoked / lost and the revocation drain (the loop);
* :mod:`.executor` -- handlers (handler threads, or the loop for ``async def``) and partition
  callbacks (their own thread, or the loop), with one exception policy;
* :mod:`.cancels` -- noticing cancel requests for the jobs this worker runs (the loop);
* :mod:`.wakeups` -- UDP nudges, LISTEN/NOTIFY, retry timers, the poll backstop (the loop);
* :mod:`.measures` -- histograms and counters by task for ``/metrics`` (written on the loop);
* :mod:`.database` and :mod:`.threads` -- blocking calls off the loop, on daemon threads.

The thread map:

==================  ===========================================================================
thread              runs
==================  ===========================================================================
the loop            ``Worker.run``'s ``asyncio.run``: pump, ledger, ownership, wake-ups, async
                    handlers and async callbacks, signal handlers. Owns every job structure.
ringwork-job-N      plain handlers (``concurrency`` daemon threads); report through the
                    executor's outbox.
ringwork-callback   plain partition callbacks, one at a time, in order (one daemon thread).
ringwork-db-0/1     blocking store calls: rounds, failures, ``coordinator.start``/``stop``.
ringwork-listen     the blocking LISTEN connect (PostgreSQL), one at a time.
the coordinator's   calls ``Ownership.listener`` (which only hands the event to the loop) and
                    answers ``claimable()`` under its own lock (the node's business).
metrics server      reads :class:`Stats` and its ``measures`` (:mod:`.measures`) at each scrape
                    (``--metrics-port``), and the owned partitions' backlog (one query, cached).
any thread          ``Worker.request_stop``, ``wait_ready``, ``failure``.
==================  ===========================================================================

Fields that cross threads: the executor's ``_outbox`` (a deque: handler threads append, the
loop drains) and ``_collect_scheduled`` (a flag; a lost race costs one extra wake-up);
an attempt's ``ended`` time (set by its handler thread before the outbox append);
each claimed job's cancel flag (set on the loop, read by its handler); ``Stats``' ints
(written on the loop, read by the metrics thread); ``Pump.failure`` (a str set
once on the loop, read by ``Worker.failure``); ``Worker._loop`` and ``Ownership._loop`` (set
once before anything can use them). The only lock of this package is each ``DaemonPool``'s,
around its thread list; everything else is confined to the loop.
"""

from ringwork.worker.ledger import Stats
from ringwork.worker.process import Worker, cluster_node, protocol_config

__all__ = ["Stats", "Worker", "cluster_node", "protocol_config"]
