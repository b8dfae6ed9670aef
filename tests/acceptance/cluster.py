"""A local cluster of real ``ringwork worker`` processes for acceptance tests.

Every process is the leader of its own process group and is killed by PID at teardown; waits
are conditions with deadlines, never bare sleeps.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringwork import App
from ringwork.status import collect
from tests.acceptance.cluster_app import build
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]
APP_SPEC = "tests.acceptance.cluster_app:app"


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path
    #: Started under a wrapper (``prefix``): one that execs the worker (``ip netns exec``) or
    #: one that forks it as its child (``faketime``).
    wrapped: bool = False

    @property
    def pid(self) -> int:
        """The process group leader's pid (the worker's, unless a wrapper forked it)."""
        return self.popen.pid

    @property
    def worker_pid(self) -> int:
        """The worker's own pid (it is in its node id)."""
        if not self.wrapped:
            return self.pid

        def find() -> int | None:
            if Path(f"/proc/{self.pid}/cmdline").read_text().split("\0")[0] == sys.executable:
                return self.pid  # the wrapper exec'd the worker
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
            return int(children[0]) if children else None

        return wait_for(find, 10, 0.02, "the wrapped worker")

    @property
    def metrics_port(self) -> int:
        """The port the worker chose (``--metrics-port 0``), from its log line."""
        found = wait_for(lambda: re.search(r"event=metrics_serving .*port=(\d+)",
                                           self.log.read_text()), 30, 0.05, "metrics port")
        return int(found.group(1))

    def metrics(self) -> dict[str, float]:
        """Scrape ``/metrics``: ``{'name{labels}': value}``."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


@dataclass
class Events:
    """Handler event logs: per job id, the (pid, time) of each start and end, plus seq/key;
    per partition, the (pid, time) of each ``assigned`` and ``revoked`` callback."""

    starts: dict[int, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    ends: dict[int, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    key: dict[int, str] = field(default_factory=dict)
    seq: dict[int, int] = field(default_factory=dict)
    assigned: dict[int, list[tuple[int, float]]] = field(
        default_factory=lambda: defaultdict(list))
    revoked: dict[int, list[tuple[int, float]]] = field(
        default_factory=lambda: defaultdict(list))


class Cluster:
    """``app_spec`` is what the workers run and ``app_build`` registers the same tasks on the
    test's own App (default: :mod:`tests.acceptance.cluster_app`)."""

    def __init__(self, db_url: str, name: str, workdir: Path, *, session_timeout: float = 3.0,
                 partitions: int = 64, app_spec: str = APP_SPEC,
                 app_build: Callable[[App], App] = build):
        self.db_url = db_url
        self.name = name
        self.workdir = workdir
        self.session_timeout = session_timeout
        self.partitions = partitions
        self.app_spec = app_spec
        self.procs: list[Proc] = []
        self.app = app_build(App(database_url=db_url, cluster=name, partitions=partitions))
        self.app.configure(session_timeout=session_timeout)

    # -- processes -----------------------------------------------------------------------------

    def start(self, n: int = 1, *extra: str, prefix: Sequence[str] = (),
              db_url: str | None = None, env: dict[str, str] | None = None) -> list[Proc]:
        """Start ``n`` workers; ``prefix`` wraps the command (``ip netns exec NS``, ``faketime
        -f +1h``), ``db_url`` is the database as the workers reach it (default: as the test
        does) and ``env`` adds variables to the workers' environment."""
        env = {**os.environ, "RINGWORK_DATABASE_URL": db_url or self.db_url,
               "RINGWORK_CLUSTER": self.name, "RINGWORK_PARTITIONS": str(self.partitions),
               "RINGWORK_TEST_EVENTS": str(self.workdir), "RINGWORK_LOG_LEVEL": "INFO",
               **(env or {})}
        started = []
        for _ in range(n):
            log = self.workdir / f"worker-{len(self.procs)}.log"
            with open(log, "ab") as out:
                popen = subprocess.Popen(
                    [*prefix, sys.executable, "-m", "ringwork.cli", "worker", self.app_spec,
                     "--metrics-port", "0", "--session-timeout", str(self.session_timeout),
                     *extra],
                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            proc = Proc(popen, log, wrapped=bool(prefix))
            self.procs.append(proc)
            started.append(proc)
        return started

    def signal(self, proc: Proc, sig: int) -> float:
        os.killpg(proc.pid, sig)
        return time.time()

    def kill9(self, proc: Proc) -> float:
        at = self.signal(proc, signal.SIGKILL)
        proc.popen.wait(10)
        return at

    def close(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait(10)
        self.app.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name} (pid {p.pid})\n{p.log.read_text()[-4000:]}"
                         for p in self.procs)

    # -- observing -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return collect(self.app)

    def node_of(self, proc: Proc, doc: dict[str, Any] | None = None) -> dict[str, Any] | None:
        doc = doc or self.status()
        for node in doc["nodes"]:
            if f"-{proc.worker_pid}-" in node["id"] and node["role"] != "stale":
                return node
        return None

    def balanced(self, procs: list[Proc], extra_live: Sequence[Proc] = ()) -> dict[str, Any] | None:
        """The status if exactly ``procs`` (and ``extra_live``, owning nothing) are live, one
        of them leads, and they share all partitions in balance."""
        doc = self.status()
        live = [n for n in doc["nodes"] if n["role"] != "stale"]
        mine = [self.node_of(p, doc) for p in procs]
        if any(m is None for m in mine) or len(live) != len(procs) + len(extra_live):
            return None
        if sum(1 for n in live if n["role"] == "leader") != 1:
            return None
        counts = sorted(len(m["partitions"]) for m in mine if m)
        owned = sorted(p for m in mine if m for p in m["partitions"])
        lo, hi = self.partitions // len(procs), -(-self.partitions // len(procs))
        if owned != list(range(self.partitions)) or counts[0] < lo or counts[-1] > hi:
            return None
        return doc

    def wait_balanced(self, procs: list[Proc], timeout: float = 30.0,
                      extra_live: Sequence[Proc] = ()) -> dict[str, Any]:
        try:
            return wait_for(lambda: self.balanced(procs, extra_live), timeout, 0.1,
                            f"{len(procs)} nodes balanced")
        except AssertionError:
            raise AssertionError(f"not balanced: {self.status()}\n{self.logs()}") from None

    def wait_done(self, ids: list[int], timeout: float = 60.0) -> None:
        def done() -> bool:
            return self.app.store.counts_by_state()["succeeded"] >= len(ids)

        try:
            wait_for(done, timeout, 0.1, "all jobs succeeded")
        except AssertionError:
            raise AssertionError(f"{self.app.store.counts_by_state()}\n{self.logs()}") from None

    def events(self) -> Events:
        events = Events()
        for path in self.workdir.glob("events-*.log"):
            for line in path.read_text().splitlines():
                kind, job_id, key, seq, pid, ts = line.split()
                if kind in ("A", "R"):  # a partition callback: "job_id" is the partition
                    target = events.assigned if kind == "A" else events.revoked
                    target[int(job_id)].append((int(pid), float(ts)))
                    continue
                target = events.starts if kind == "S" else events.ends
                target[int(job_id)].append((int(pid), float(ts)))
                events.key[int(job_id)] = key
                events.seq[int(job_id)] = int(seq)
        for table in (events.starts, events.ends, events.assigned, events.revoked):
            for times in table.values():
                times.sort(key=lambda pid_ts: pid_ts[1])
        return events

    def enqueue(self, n: int, keys: int = 64, ms: int = 5, task: str = "rec") -> list[int]:
        return self.app.enqueue_many(
            [{"task": task, "key": f"key-{i % keys}", "payload": {"seq": i, "ms": ms}}
             for i in range(n)]
        )
