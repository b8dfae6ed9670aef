"""The ringwork app the benchmark workers run (``ringwork worker bench.rw_app:app``).

Job bodies mirror the peers' apps (``../shared/bench/peers/pc_app.py``, ``huey_app.py``): the
W1 no-op records nothing; ``rec`` appends ``S``/``E`` lines through the peers' own
``common.record_event`` as its first and last statement, so the peers' harness reads them.
The database comes from ``RINGWORK_DATABASE_URL`` (set by the harness, one fresh database per
workload); the peers' folder from ``RINGWORK_PEERS_DIR`` (default ``<repo>/../shared/bench/peers``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from ringwork import App, Job

PEERS_DIR = Path(
    os.environ.get("RINGWORK_PEERS_DIR")
    or Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "peers"
)
if str(PEERS_DIR) not in sys.path:
    sys.path.insert(0, str(PEERS_DIR))

import common  # noqa: E402  (the peers' harness, imported from their folder, not copied)

record_event = common.record_event

app = App(cluster="rwbench", partitions=64)


@app.task("noop")
def noop(job: Job) -> None:
    """W1: a true no-op (payload ``{"key", "seq"}``), like the peers' ``noop``."""


@app.task("noop_tx", transactional=True)
def noop_tx(job: Job, conn: Any) -> None:
    """W1 as a transactional task (``bench.transactional``): nothing is done with ``conn``, so
    what it measures is the price of the handler's own transaction and its completion in it."""


async def _rec(job: Job) -> None:
    p = job.payload
    record_event("S", p["seq"], p["key"], p["kseq"], p["t0"])
    if p["sleep_ms"]:
        await asyncio.sleep(p["sleep_ms"] / 1000.0)
    record_event("E", p["seq"], p["key"], p["kseq"], p["t0"])


@app.task("rec")
async def rec(job: Job) -> None:
    """W2/W3/W5/W6: records start and end; sleeps like the async peers (asyncio.sleep)."""
    await _rec(job)


@app.task("rec_ordered", ordered=True)
async def rec_ordered(job: Job) -> None:
    """W4: ringwork's strongest per-key option: one job at a time per key, in enqueue order."""
    await _rec(job)
