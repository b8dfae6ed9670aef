"""Terminal rendering with rich: tables for ``jobs list`` (and, with the cluster, ``status``)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from ringwork.job import JobRecord

_STATE_STYLE = {
    "queued": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "dead": "red",
    "cancelled": "dim",
}


def jobs_table(records: Sequence[JobRecord], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(box=None, header_style="bold")
    for column in ("id", "task", "key", "part", "state", "attempts", "claimed_by", "enqueued_at",
                   "last_error"):
        table.add_column(column, overflow="fold")
    for r in records:
        error = (r.last_error or "").splitlines()[0][:60] if r.last_error else ""
        style = _STATE_STYLE.get(r.state, "")
        table.add_row(
            str(r.id), r.task, r.key, str(r.partition), f"[{style}]{r.state}[/]",
            f"{r.attempts}/{r.max_attempts}", r.claimed_by or "",
            r.enqueued_at.strftime("%Y-%m-%d %H:%M:%S") if r.enqueued_at else "", error,
        )
    console.print(table if records else "[dim]no jobs[/]")
