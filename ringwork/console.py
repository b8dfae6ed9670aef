"""Terminal rendering with rich: the tables of ``jobs list``, ``cron`` and ``status``, and the
live view of ``status --watch``; every table fits the terminal's width (80 columns piped).

Runs on the main thread of a ``ringwork`` command.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ringwork.job import JobRecord

_STATE_STYLE = {
    "queued": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "dead": "red",
    "cancelled": "dim",
}


class _Terminal(Console):
    """A console that lets a closed output end the command as the CLI decides.

    rich's own answer to a broken pipe is ``SystemExit(1)``; the CLI ends quietly with 141 like
    every other command that prints (ringwork.cli.group), so the error goes up to it.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more to write: a Live display's exit must not try again
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def terminal() -> Console:
    """The console the CLI prints to (stdout)."""
    return _Terminal()


def _state_text(r: JobRecord) -> str:
    """The state, and for a dead job of a ``block_key_on_dead`` task that its key waits on it
    (free: the row is read anyway)."""
    if r.state == "dead" and r.ordered and r.block_key_on_dead:
        return "dead (blocks key)"
    return r.state


def cell(text: str, style: str = "") -> Text:
    """A table cell that never wraps: cut to its column with an ellipsis."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def fitted_table(columns: Sequence[tuple[str, bool]]) -> Table:
    """A borderless table whose ``(name, shrinks)`` columns fit the console's width.

    A column that ``shrinks`` gives up width when the table is too wide (rich narrows the
    widest of them first), and its cells, built with :func:`cell`, are then cut with an
    ellipsis; a column that does not (ids, states, times) keeps its width. Nothing wraps, so a
    long key or error never turns into a column of one-word lines.
    """
    table = Table(box=None, header_style="bold", padding=(0, 1, 0, 0), pad_edge=False)
    for name, shrinks in columns:
        table.add_column(cell(name), no_wrap=not shrinks, overflow="ellipsis",
                         min_width=min(len(name), 4) if shrinks else None)
    return table


def jobs_table(records: Sequence[JobRecord], console: Console | None = None) -> None:
    console = console or terminal()
    table = fitted_table([("id", False), ("task", True), ("key", True), ("part", False),
                          ("state", False), ("tries", False), ("claimed_by", True),
                          ("enqueued (UTC)", False), ("last_error", True)])
    for r in records:
        error = (r.last_error or "").splitlines()[0] if r.last_error else ""
        table.add_row(
            cell(str(r.id)),
            cell(r.task),
            cell(r.key),
            cell(str(r.partition)),
            cell(_state_text(r), _STATE_STYLE.get(r.state, "")),
            cell(f"{r.attempts}/{r.max_attempts}"),
            cell(r.claimed_by or ""),
            cell(r.enqueued_at.strftime("%m-%d %H:%M:%S") if r.enqueued_at else ""),
            cell(error),
        )
    console.print(table if records else "[dim]no jobs[/]")


def cron_table(rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    """``ringwork cron``'s rows (see :func:`ringwork.cli.cron.schedules`)."""
    console = console or terminal()
    table = fitted_table([("TASK", True), ("CRON", True), ("TIMEZONE", True),
                          ("NEXT RUN", True), ("LAST RUN", True)])
    for r in rows:
        last = ("-" if r["last_run"] is None
                else f"{r['last_run']} (job {r['last_job']}, {r['last_state']})")
        table.add_row(cell(r["task"]), cell(r["cron"]), cell(r["timezone"]),
                      cell(r["next_run"] or "-"), cell(last))
    console.print(table)


ROLE_STYLES = {"leader": "bold green", "stale": "red", "not joined": "bold yellow"}


def line(text: str = "", style: str = "") -> Text:
    """A line of the status view: cut at the console's width, never wrapped."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def status_view(doc: dict[str, Any]) -> Group:
    """A rich renderable of a status document (see :mod:`ringwork.status`)."""
    head = line()
    head.append(f"cluster {doc['cluster']}", style="bold")
    head.append(f"  term {doc['term']}  {doc['partition_count']} partitions  ")
    head.append(f"leader {doc['leader'] or '-'}")
    lines: list[Any] = [head]
    if not doc["alive"]:
        dead = line("no node is alive", style="bold red")
        if doc["last_leader"]:
            dead.append(f" (last leader: {doc['last_leader']})")
        lines.append(dead)
    nodes = fitted_table([("node", True), ("role", False), ("prio", False),
                          ("endpoint", True), ("partitions", True), ("heartbeat", False)])
    for n in doc["nodes"]:
        parts = n["partitions"]
        nodes.add_row(
            cell(n["id"]),
            cell(n["role"], ROLE_STYLES.get(n["role"], "")),
            cell(str(n["priority"])),
            cell(n["endpoint"]),
            cell(f"{len(parts)}: {_ranges(parts)}" if parts else "0"),
            cell(f"{n['last_heartbeat_age_s']:.1f}s ago"),
        )
    capped = set(doc.get("jobs_capped", ()))
    counts = line("jobs: ")
    for state, count in doc["jobs"].items():
        counts.append(state, style=_STATE_STYLE.get(state, ""))
        counts.append(f" {count}{'+' if state in capped else ''}  ")
    counts.rstrip()
    backlog = doc["backlog"]
    lines += [nodes, counts]
    if backlog:
        top = sorted(backlog.items(), key=lambda kv: -kv[1])[:8]
        lines.append(line("backlog (top partitions): "
                          + ", ".join(f"p{p}={n}" for p, n in top)))
    blocked = doc.get("blocked_keys") or []
    if blocked:
        more = " and more" if doc.get("blocked_keys_more") else ""
        lines.append(line(
            "keys blocked by a dead job (retry or cancel it): "
            + ", ".join(f"{b['task']}/{b['key']} (job {b['job']})" for b in blocked) + more,
            style="yellow"))
    if doc["unowned_partitions"]:
        lines.append(
            line(f"unowned partitions: {_ranges(doc['unowned_partitions'])}", style="yellow")
        )
    return Group(*lines)


def _ranges(parts: Sequence[int]) -> str:
    out: list[list[int]] = []
    for p in sorted(parts):
        if out and out[-1][1] == p - 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


# -- status --watch ---------------------------------------------------------------------------

#: Owner colours of the partition map, in the order of the status document's nodes.
OWNER_STYLES = ("black on green", "black on cyan", "black on magenta", "black on yellow",
                "white on blue", "white on red", "black on bright_green", "black on white")
FINISHED = ("succeeded", "dead", "cancelled")


class Throughput:
    """Jobs finished per second, measured between two status documents.

    Finished counts are exact up to ``jobs_cap`` (:mod:`ringwork.status`); a state over it has
    its count pinned there, so the rate is unknown (``None``) while any finished state is.
    The queue's own rate (queued + running, per second; negative: it drains) is always exact.
    """

    def __init__(self) -> None:
        self._last: tuple[float, int, int] | None = None

    def update(self, doc: dict[str, Any], now: float) -> dict[str, float | None]:
        jobs = doc["jobs"]
        finished = sum(jobs.get(s, 0) for s in FINISHED)
        pending = jobs.get("queued", 0) + jobs.get("running", 0)
        rate: dict[str, float | None] = {"finished_per_s": None, "queue_per_s": None,
                                         "over": None}
        last, self._last = self._last, (now, finished, pending)
        if last is None or now <= last[0]:
            return rate
        elapsed = now - last[0]
        rate["over"] = elapsed
        rate["queue_per_s"] = (pending - last[2]) / elapsed
        if not doc.get("jobs_capped"):
            rate["finished_per_s"] = max(0, finished - last[1]) / elapsed
        return rate


def partition_map(doc: dict[str, Any], per_row: int = 32) -> Group:
    """The P partitions as a grid, each cell its owner's letter on its owner's colour (``·``:
    unowned, ``+`` after a letter: queued jobs wait there), and the legend."""
    letters: dict[str, tuple[str, str]] = {}
    for i, n in enumerate(doc["nodes"]):
        letters[n["id"]] = (chr(ord("A") + i % 26), OWNER_STYLES[i % len(OWNER_STYLES)])
    owner_of = {p: n["id"] for n in doc["nodes"] for p in n["partitions"]}
    for owner, parts in doc.get("partitions_of_unregistered_owners", {}).items():
        letters.setdefault(owner, ("?", "black on red"))
        owner_of.update(dict.fromkeys(parts, owner))
    backlog = {int(p): n for p, n in doc["backlog"].items()}
    rows: list[Any] = [line("partition map", style="bold")]
    count = doc["partition_count"]
    for start in range(0, count, per_row):
        row = line(f"{start:>4} ")
        for p in range(start, min(start + per_row, count)):
            owner = owner_of.get(p)
            if owner is None:
                row.append("·", style="bold red")
            else:
                letter, style = letters[owner]
                row.append(letter, style=style)
            row.append("+" if backlog.get(p) else " ", style="yellow")
        rows.append(row)
    for n in doc["nodes"]:
        letter, style = letters[n["id"]]
        legend = line("     ")
        legend.append(f" {letter} ", style=style)
        legend.append(f" {n['id']} ({n['role']}, {len(n['partitions'])} partitions)")
        rows.append(legend)
    return Group(*rows)


def watch_view(doc: dict[str, Any], rate: dict[str, float | None], interval: float) -> Group:
    """One frame of ``status --watch``: the status, the partition map, the throughput."""
    finished, queue = rate.get("finished_per_s"), rate.get("queue_per_s")
    speed = line("throughput: ", style="bold")
    if finished is not None:
        speed.append(f"{finished:.1f} jobs/s finished")
    elif queue is not None:
        speed.append(f"finished count over {doc.get('jobs_cap')}: rate unknown", style="dim")
    else:
        speed.append("measuring...", style="dim")
    if queue is not None:
        speed.append(f"  queue {queue:+.1f}/s")
    stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
    footer = line(f"updated {stamp} UTC, every {interval:g}s; Ctrl-C to quit", style="dim")
    return Group(status_view(doc), line(), partition_map(doc), line(), speed, footer)
