"""Terminal rendering with rich: tables for ``jobs list`` (and, with the cluster, ``status``).

Runs on the main thread of a ``ringwork`` command.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
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


def jobs_table(records: Sequence[JobRecord], console: Console | None = None) -> None:
    console = console or terminal()
    table = Table(box=None, header_style="bold")
    for column in (
        "id",
        "task",
        "key",
        "part",
        "state",
        "attempts",
        "claimed_by",
        "enqueued_at",
        "last_error",
    ):
        table.add_column(column, overflow="fold")
    for r in records:
        error = (r.last_error or "").splitlines()[0][:60] if r.last_error else ""
        style = _STATE_STYLE.get(r.state, "")
        table.add_row(
            str(r.id),
            r.task,
            r.key,
            str(r.partition),
            f"[{style}]{_state_text(r)}[/]",
            f"{r.attempts}/{r.max_attempts}",
            r.claimed_by or "",
            r.enqueued_at.strftime("%Y-%m-%d %H:%M:%S") if r.enqueued_at else "",
            error,
        )
    console.print(table if records else "[dim]no jobs[/]")


ROLE_STYLES = {"leader": "bold green", "stale": "red", "not joined": "bold yellow"}


def status_view(doc: dict[str, Any]) -> Group:
    """A rich renderable of a status document (see :mod:`ringwork.status`)."""
    head = Text()
    head.append(f"cluster {doc['cluster']}", style="bold")
    head.append(f"  term {doc['term']}  leader {doc['leader'] or '-'}  ")
    head.append(f"{doc['partition_count']} partitions")
    if not doc["alive"]:
        head.append("\nno node is alive", style="bold red")
        if doc["last_leader"]:
            head.append(f" (last leader: {doc['last_leader']})")
    nodes = Table(box=None, header_style="bold", title=None)
    for column in ("node", "role", "priority", "endpoint", "partitions", "heartbeat"):
        nodes.add_column(column)
    for n in doc["nodes"]:
        style = ROLE_STYLES.get(n["role"], "")
        parts = n["partitions"]
        nodes.add_row(
            n["id"],
            f"[{style}]{n['role']}[/]" if style else n["role"],
            str(n["priority"]),
            n["endpoint"],
            f"{len(parts)}: {_ranges(parts)}" if parts else "0",
            f"{n['last_heartbeat_age_s']:.1f}s ago",
        )
    capped = set(doc.get("jobs_capped", ()))
    counts = "  ".join(
        f"[{_STATE_STYLE.get(state, '')}]{state}[/] {count}{'+' if state in capped else ''}"
        for state, count in doc["jobs"].items()
    )
    backlog = doc["backlog"]
    lines: list[Any] = [head, nodes, Text.from_markup(f"jobs: {counts}")]
    if backlog:
        top = sorted(backlog.items(), key=lambda kv: -kv[1])[:8]
        lines.append(Text("backlog (top partitions): " + ", ".join(f"p{p}={n}" for p, n in top)))
    blocked = doc.get("blocked_keys") or []
    if blocked:
        more = " and more" if doc.get("blocked_keys_more") else ""
        lines.append(Text(
            "keys blocked by a dead job (retry or cancel it): "
            + ", ".join(f"{b['task']}/{b['key']} (job {b['job']})" for b in blocked) + more,
            style="yellow"))
    if doc["unowned_partitions"]:
        lines.append(
            Text(f"unowned partitions: {_ranges(doc['unowned_partitions'])}", style="yellow")
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
