"""``ringwork cron APP``: the app's periodic tasks, with their next and last runs.

"Next" is computed from the database's clock (the clock the leader goes by, not this host's);
"last" is the newest tick on record in the jobs table -- the job the leader enqueued for it, with
its id and state -- for as long as retention keeps it.

Runs on the main thread of a ``ringwork`` process.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ringwork.app import App
from ringwork.cli.options import (
    app_argument,
    database_option,
    json_option,
    load_app,
    migrate_option,
)


def schedules(app: App) -> list[dict[str, Any]]:
    """One row per schedule, for the table and ``--json``."""
    if not app.schedules:
        return []
    found = sorted(app.schedules.values(), key=lambda s: s.task)
    now, newest = app.store.cron_state({s.task: s.key_prefix for s in found})
    rows = []
    for s in found:
        nxt = s.next_after(now)
        last_job = newest.get(s.task)
        last = s.tick_of(last_job["dedupe_key"]) if last_job else None
        rows.append({
            "task": s.task, "cron": s.cron, "timezone": s.timezone, "missed": s.missed,
            "next_run": None if nxt is None else nxt.isoformat(),
            "last_run": None if last is None else last.isoformat(),
            "last_job": None if last_job is None else last_job["id"],
            "last_state": None if last_job is None else last_job["state"],
        })
    return rows


@click.command()
@app_argument
@json_option("Print one JSON array.")
@database_option
@migrate_option
def cron(app_spec: str, as_json: bool, database_url: str | None, no_migrate: bool) -> None:
    """The periodic tasks: cron, timezone, next run and last run."""
    app = load_app(app_spec, database_url, no_migrate)
    try:
        rows = schedules(app)
    finally:
        app.close()
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no periodic tasks")
        return
    from ringwork.console import cron_table

    cron_table(rows)
