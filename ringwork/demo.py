"""``ringwork demo``: a local showcase that proves its own result.

It runs the example app's tasks (``ringwork.demo_app``) on a temporary SQLite database: enqueues
a few thousand jobs over many keys, starts worker processes, shows live progress, (with more than
one process) kills one with SIGKILL midway and shows the failover, then checks the outcome
against the handlers' own event logs -- not ringwork's records -- and exits 0 only if every job
succeeded and nothing was lost.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ringwork.app import App
from ringwork.console import terminal

Popen = subprocess.Popen[bytes]

#: Shipped inside the package, so the demo needs nothing but an install (see ringwork.demo_app).
DEMO_APP = "ringwork.demo_app:app"
DEADLINE = 90.0  # seconds for the whole run before the demo gives up and reports failure


@dataclass
class Events:
    """What the example handlers logged: per job, the processes that started/ended it."""

    starts: dict[int, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    ends: dict[int, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    partition: dict[int, int] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path) -> Events:
        events = cls()
        for path in directory.glob("events-*.log"):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) != 7:
                    continue
                kind, job_id, _key, part, _attempt, pid, ts = parts
                target = events.starts if kind == "S" else events.ends
                target[int(job_id)].append((int(pid), float(ts)))
                events.partition[int(job_id)] = int(part)
        for table in (events.starts, events.ends):
            for times in table.values():
                times.sort(key=lambda pid_ts: pid_ts[1])
        return events


def _spawn(app_spec: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ringwork.cli", "worker", app_spec],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def run_demo(job_count: int = 3000, processes: int = 3, keep: bool = False) -> int:
    from ringwork.demo_app import LOG_DIR_VARIABLE, app

    console = terminal()  # a closed stdout ends the demo as it ends any command
    tmp = Path(tempfile.mkdtemp(prefix="ringwork-demo-"))
    url = f"sqlite:///{tmp / 'demo.db'}"
    env = {
        **os.environ,
        "RINGWORK_DATABASE_URL": url,
        LOG_DIR_VARIABLE: str(tmp),
        "RINGWORK_LOG_LEVEL": "INFO",
    }
    app.configure(database_url=url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        console.print(f"[bold]ringwork demo[/] -- database {url}")
        t0 = time.monotonic()
        batch = []
        for i in range(job_count):
            key = f"account-{i % 200}"
            task = "ledger" if i % 5 == 0 else ("fetch" if i % 5 == 1 else "greet")
            batch.append(app.build_job(task, key, {"seq": i, "sleep": 0.003}))
        ids = app.enqueue_many(batch)
        console.print(
            f"enqueued {len(ids)} jobs over 200 keys in "
            f"{time.monotonic() - t0:.2f}s (every 5th is an ordered 'ledger' job)"
        )
        for n in range(processes):
            procs.append(_spawn(DEMO_APP, env, tmp / f"worker-{n}.log"))
        console.print(
            f"started {processes} worker process(es): " + ", ".join(str(p.pid) for p in procs)
        )
        report = _watch(app, procs, tmp, set(ids), console)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return _report(app, tmp, set(ids), report, procs, console)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        app.close()
        if keep:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Failover:
    killed_pid: int | None = None
    killed_at: float | None = None
    partitions: set[int] = field(default_factory=set)
    resumed_after: float | None = None
    new_owners: Counter[str] = field(default_factory=Counter)


def _watch(app: App, procs: list[Popen], tmp: Path, ids: set[int], console: Console) -> Failover:
    failover = Failover()
    deadline = time.monotonic() + DEADLINE
    columns = (
        TextColumn("[bold]jobs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[nodes]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("jobs", total=len(ids), nodes="")
        while time.monotonic() < deadline:
            counts = app.store.counts_by_state()
            done = counts.get("succeeded", 0) + counts.get("dead", 0)
            events = Events.read(tmp)
            per_pid = Counter(pid for ends in events.ends.values() for pid, _ in ends)
            nodes = "  ".join(f"{pid}:{n}" for pid, n in sorted(per_pid.items()))
            progress.update(bar, completed=done, nodes=nodes)
            if len(procs) > 1 and failover.killed_pid is None and done >= len(ids) * 0.4:
                failover = _kill_one(app, procs, console)
            if failover.killed_at is not None and failover.resumed_after is None:
                failover.resumed_after = _resumed(events, failover)
                if failover.resumed_after is not None:
                    owners = app.store.read_partitions()
                    failover.new_owners = Counter(
                        owners[p].owner or "nobody" for p in failover.partitions
                    )
                    console.print(
                        f"failover: the killed worker's partitions were processing again "
                        f"{failover.resumed_after:.2f}s after the kill, now owned by "
                        + ", ".join(f"{o} ({n})" for o, n in failover.new_owners.items())
                    )
            if done >= len(ids):
                break
            if all(p.poll() is not None for p in procs):
                console.print("[red]all workers exited early[/]")
                break
            time.sleep(0.2)
    return failover


def _kill_one(app: App, procs: list[Popen], console: Console) -> Failover:
    """SIGKILL the last worker (a follower) and remember which partitions it owned."""
    victim = procs[-1]
    owners = app.store.read_partitions()
    nodes = {n.node_id: n for n in app.store.list_nodes()}
    mine = {p for p, o in owners.items() if o.owner and f"-{victim.pid}-" in o.owner}
    os.killpg(victim.pid, signal.SIGKILL)
    at = time.time()
    console.print(
        f"[red]killed worker {victim.pid} with SIGKILL[/] (it owned {len(mine)} "
        f"partitions; {len(nodes)} nodes were registered)"
    )
    return Failover(killed_pid=victim.pid, killed_at=at, partitions=mine)


def _resumed(events: Events, failover: Failover) -> float | None:
    """Seconds from the kill until another process started a job in a dead node's partition."""
    assert failover.killed_at is not None
    first = [
        ts
        for job_id, starts in events.starts.items()
        if events.partition.get(job_id) in failover.partitions
        for pid, ts in starts
        if pid != failover.killed_pid and ts >= failover.killed_at
    ]
    return min(first) - failover.killed_at if first else None


def _report(
    app: App, tmp: Path, ids: set[int], failover: Failover, procs: list[Popen], console: Console
) -> int:
    events = Events.read(tmp)
    counts = app.store.counts_by_state()
    records = {r.id: r for r in app.store.list_jobs(limit=len(ids) + 10)}
    not_succeeded = [i for i in ids if records.get(i) is None or records[i].state != "succeeded"]
    never_ended = [i for i in ids if not events.ends.get(i)]
    ran_twice = {i: s for i, s in events.starts.items() if len(s) > 1}
    ended_twice = [i for i, e in events.ends.items() if len(e) > 1]
    why: Counter[str] = Counter()
    for job_id, starts in ran_twice.items():
        first_pid = starts[0][0]
        if failover.killed_pid is not None and first_pid == failover.killed_pid:
            ended_in_dead = any(pid == first_pid for pid, _ in events.ends.get(job_id, []))
            why[
                "finished on the killed node, not yet written when it died"
                if ended_in_dead
                else "in flight on the killed node"
            ] += 1
        else:
            why["failed attempt retried (the 'flaky' task or an error)"] += 1

    table = Table(title="ringwork demo report", show_header=False, box=None)
    table.add_row("jobs enqueued", str(len(ids)))
    table.add_row("succeeded (database)", str(counts.get("succeeded", 0)))
    table.add_row("not succeeded", str(len(not_succeeded)))
    table.add_row("never finished (handler logs)", str(len(never_ended)))
    table.add_row("ran more than once", str(len(ran_twice)))
    for reason, n in why.items():
        table.add_row(f"  - {reason}", str(n))
    table.add_row("finished more than once (handler logs)", str(len(ended_twice)))
    if failover.killed_pid is not None:
        table.add_row(
            "killed worker",
            f"pid {failover.killed_pid}, owned {len(failover.partitions)} partitions",
        )
        resumed = (
            f"{failover.resumed_after:.2f}s"
            if failover.resumed_after is not None
            else "not observed"
        )
        table.add_row("its partitions processing again after", resumed)
        for owner, n in failover.new_owners.items():
            table.add_row(f"  - taken over by {owner}", f"{n} partitions")
    exits = [p.returncode for p in procs if p.pid != failover.killed_pid]
    table.add_row("surviving workers' exit codes", ", ".join(map(str, exits)))
    console.print(table)
    clean = not not_succeeded and not never_ended and all(code == 0 for code in exits)
    console.print(
        "[bold green]clean: every job succeeded, none lost[/]"
        if clean
        else "[bold red]NOT clean[/]"
    )
    return 0 if clean else 1
