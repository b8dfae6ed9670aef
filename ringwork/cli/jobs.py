"""``ringwork enqueue`` and ``ringwork jobs APP list|show|retry|cancel|prune``: jobs in the
database.

Runs on the main thread of a ``ringwork`` process.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click

from ringwork.app import App
from ringwork.cli.options import (
    AppFirstCommand,
    AppFirstGroup,
    AppRef,
    app_argument,
    database_option,
    json_option,
    load_app,
    migrate_option,
    pass_app,
)
from ringwork.errors import JobNotFound, PayloadError
from ringwork.job import AttemptRecord, JobRecord
from ringwork.settings import parse_duration
from ringwork.store.retention import BATCH_ROWS, RetentionPolicy
from ringwork.store.schema import FINISHED_STATES

#: The leader's pause between two batches, kept by the CLI too.
BATCH_PAUSE = RetentionPolicy().pause


@click.command(cls=AppFirstCommand)
@app_argument
@click.argument("task")
@click.option("--key", required=True, help="Partitioning key; '{i}' is replaced by 0..N-1.")
@click.option("--payload", default=None, help="JSON payload.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--priority", type=int, default=None, help="Higher runs first.")
@click.option("--delay", type=click.FloatRange(min=0), default=None, help="Seconds to wait.")
@click.option("--dedupe-key", default=None, help="Skip if an unfinished job has this key.")
@json_option("Print the new jobs' ids as one JSON array.")
@database_option
@migrate_option
def enqueue(
    app_spec: str,
    task: str,
    key: str,
    payload: str | None,
    count: int,
    priority: int | None,
    delay: float | None,
    dedupe_key: str | None,
    as_json: bool,
    database_url: str | None,
    no_migrate: bool,
) -> None:
    """Enqueue COUNT jobs of TASK (MODULE:APP may be left to RINGWORK_APP)."""
    app = load_app(app_spec, database_url, no_migrate)
    app.get_task(task)  # unknown task: fail before touching the database
    try:
        data = json.loads(payload) if payload is not None else None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"--payload is not valid JSON: {exc}") from None
    jobs = [
        app.build_job(
            task,
            key.replace("{i}", str(i)),
            data,
            delay=delay,
            priority=priority,
            dedupe_key=dedupe_key,
        )
        for i in range(count)
    ]
    ids = app.enqueue_many(jobs)
    if as_json:
        click.echo(json.dumps(ids))
    elif len(ids) <= 20:
        for job_id in ids:
            click.echo(job_id)
    else:
        click.echo(f"enqueued {len(ids)} jobs of {task} (ids {ids[0]}..{ids[-1]})")
    app.close()


@click.group(cls=AppFirstGroup)
@app_argument
@database_option
@migrate_option
@click.pass_context
def jobs(ctx: click.Context, app_spec: str, database_url: str | None, no_migrate: bool) -> None:
    """Inspect and manage jobs: ringwork jobs MODULE:APP list|show|retry|cancel|prune."""
    ref = AppRef(app_spec, database_url, no_migrate)
    ctx.obj = ref
    ctx.call_on_close(ref.close)


@jobs.command("list")
@click.option("--state", type=click.Choice(["queued", "running", "succeeded", "dead", "cancelled"]))
@click.option("--task", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option("One JSON object per line.")
@pass_app
def jobs_list(app: App, state: str | None, task: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    from ringwork.console import jobs_table

    records = app.store.list_jobs(state=state, task=task, limit=limit)
    if as_json:
        for record in records:
            click.echo(json.dumps(_record_dict(record)))
    else:
        jobs_table(records)


@jobs.command("show")
@click.argument("job_id", type=int)
@json_option("One JSON object; its attempts under \"history\".")
@pass_app
def jobs_show(app: App, job_id: int, as_json: bool) -> None:
    """Show one job in full -- last error, result -- and its attempts, oldest first."""
    record = app.get_job(job_id)
    if record is None:
        raise JobNotFound(f"no job {job_id} in cluster {app.settings.cluster!r}")
    history = app.get_attempts(job_id)
    data = _record_dict(record)
    if as_json:
        data["history"] = [_record_dict(a) for a in history]
        click.echo(json.dumps(data))
        return
    for name, value in data.items():
        if name == "last_error" and value:
            click.echo(f"{name}:\n  " + str(value).replace("\n", "\n  "))
        elif name == "result":
            click.echo(f"{name}: {_shown_result(value)}")
        else:
            click.echo(f"{name}: {value}")
    for line in attempt_lines(history, record):
        click.echo(line)


#: ``jobs show`` prints at most this many characters of a result (``--json``: all of it).
RESULT_SHOWN = 2000


def _shown_result(value: Any) -> str:
    if value is None:
        return "None"
    text = json.dumps(value, ensure_ascii=False)
    if len(text) <= RESULT_SHOWN:
        return text
    return f"{text[:RESULT_SHOWN]}... ({len(text):,} characters; --json shows all)"


def attempt_lines(history: list[AttemptRecord], record: JobRecord,
                  width: int = 80) -> list[str]:
    """The attempts as a table of ``width`` columns: one line each, the error's first line cut
    to what is left; the attempt running now (from the job row) last."""
    rows = [(str(a.attempt), a.node or "", "" if a.epoch is None else str(a.epoch),
             _stamp(a.started_at), _took(a.started_at, a.finished_at), a.outcome,
             (a.error or "").strip().split("\n")[0]) for a in history]
    if record.state == "running":
        rows.append((str(record.attempts), record.claimed_by or "",
                     "" if record.claim_epoch is None else str(record.claim_epoch),
                     _stamp(record.started_at), "", "running", ""))
    if not rows:
        return ["history: no attempt recorded"]
    head = ("#", "node", "epoch", "started (UTC)", "took", "outcome", "error")
    fixed = [3, 14, 5, 14, 7, 9]
    lines = ["history:"]
    for row in (head, *rows):
        cells = [_fit(v, w) for v, w in zip(row[:6], fixed, strict=True)]
        line = "  " + " ".join(cells) + " "
        lines.append((line + _fit(row[6], max(0, width - len(line)))).rstrip())
    return lines


def _fit(text: str, width: int) -> str:
    if len(text) > width:
        return text[: max(0, width - 1)] + "…" if width else ""
    return text.ljust(width)


def _stamp(when: datetime | None) -> str:
    return when.strftime("%m-%d %H:%M:%S") if when else ""


def _took(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    return f"{seconds:.3f}s" if seconds < 100 else f"{seconds:.0f}s"


@jobs.command("retry")
@click.argument("job_id", type=int, required=False)
@click.option("--all", "every", is_flag=True, envvar="RINGWORK_JOBS_RETRY_ALL",
              help="Every job in --state (of --task).")
@click.option("--state", type=click.Choice(["dead", "cancelled"]), default="dead",
              show_default=True, help="With --all: which finished jobs.")
@click.option("--task", default=None, help="With --all: only this task's jobs.")
@pass_app
def jobs_retry(app: App, job_id: int | None, every: bool, state: str, task: str | None) -> None:
    """Queue a dead or cancelled job again (or, with --all, every one of --state)."""
    if every == (job_id is not None):
        raise click.UsageError("give a JOB_ID or --all, not both")
    if job_id is not None:
        if task is not None:
            raise click.UsageError("--task goes with --all")
        app.retry(job_id)
        click.echo(f"job {job_id} queued again")
        return
    retried, skipped = app.retry_all(state, task)
    line = f"queued {retried} {state} job{'s' * (retried != 1)} again"
    if task is not None:
        line += f" (task {task})"
    if skipped:
        line += f"; skipped {skipped}: an unfinished job holds its dedupe key"
    click.echo(line)


@jobs.command("cancel")
@click.argument("job_id", type=int, required=False)
@click.option("--task", default=None, help="Every queued and running job of this task.")
@pass_app
def jobs_cancel(app: App, job_id: int | None, task: str | None) -> None:
    """Cancel a job: a queued one at once, a running one by its worker (within ~1 s)."""
    if (job_id is None) == (task is None):
        raise click.UsageError("give a JOB_ID or --task, not both")
    if job_id is not None:
        if app.cancel(job_id) == "cancelled":
            click.echo(f"job {job_id} cancelled")
        else:
            click.echo(f"job {job_id} is running: cancel requested (its worker ends it)")
        return
    assert task is not None
    cancelled, requested = app.cancel_task(task)
    click.echo(f"cancelled {cancelled} queued job{'s' * (cancelled != 1)} of {task}; "
               f"requested cancel of {requested} running")


@jobs.command("prune")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="AGE",
    help="Delete jobs that finished at least this long ago: 30s, 2h, 7d (or seconds).",
)
@click.option(
    "--state",
    "states",
    envvar="RINGWORK_JOBS_PRUNE_STATE",
    multiple=True,
    type=click.Choice(FINISHED_STATES),
    help="Only jobs in this state (repeatable). Default: every finished state.",
)
@pass_app
def jobs_prune(app: App, older_than: str, states: tuple[str, ...]) -> None:
    """Delete finished jobs older than AGE, by the database's clock, in small batches.

    The leader does this by itself with the retention settings; this is for a one-off.
    """
    age = parse_duration(older_than, "--older-than")
    deleted = {state: 0 for state in states or FINISHED_STATES}
    for state in deleted:
        while True:
            n = app.store.prune_jobs(state, age)
            deleted[state] += n
            if n < BATCH_ROWS:
                break
            time.sleep(BATCH_PAUSE)
    detail = ", ".join(f"{n} {state}" for state, n in deleted.items())
    click.echo(f"deleted {sum(deleted.values())} jobs ({detail})")


def _record_dict(record: JobRecord | AttemptRecord) -> dict[str, Any]:
    data = asdict(record)
    for name, value in data.items():
        if hasattr(value, "isoformat"):
            data[name] = value.isoformat()
    return data
