"""The dashboard's URLs: one endpoint per screen, the buttons' POSTs, the event stream,
``/healthz`` and the static files.

Page endpoints are plain functions, which Starlette runs in its thread pool, because the store
is synchronous. Every link a page builds starts from the request's ``root_path``: the prefix
the dashboard is mounted under (``--prefix``, or the user's own ``Mount``).

A button's POST answers with a redirect to the job's page (303, so a reload does not repeat
it), or, when the store refuses it, that page again with the refusal's sentence: 409 for a job
in the wrong state, 404 for one that does not exist.

Threads: Starlette's thread pool (pages, POSTs), the event loop (the stream, ``/healthz``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

from ringwork.dashboard import data
from ringwork.dashboard.data import App
from ringwork.dashboard.guard import one_line
from ringwork.dashboard.live import Moves, stream
from ringwork.dashboard.pages import Pages
from ringwork.errors import ConfigurationError, InvalidJobState, JobNotFound
from ringwork.settings import parse_duration
from ringwork.store.panels import JobFilter
from ringwork.store.schema import JOB_STATES

#: Job ids are 64-bit: a larger number in a URL names no job (and the database would refuse it).
MAX_JOB_ID = 2**63 - 1
#: The longest "enqueued within" the jobs filter takes (seconds): 100 years.
MAX_SINCE = 100 * 365 * 86400.0

#: What a job page says after a button worked (``?did=``): fixed sentences, never echoed text.
DONE = {
    "retried": "Queued again.",
    "cancelled": "Cancelled.",
    "requested": "Cancel requested: its worker ends it within about a second.",
}


@dataclass(frozen=True)
class Options:
    read_only: bool = False
    hide_payloads: bool = False
    interval: float = 1.0


class Screens:
    """The endpoints, bound to one app."""

    def __init__(self, app: App, options: Options) -> None:
        self.app = app
        self.options = options
        self.pages = Pages(read_only=options.read_only, hide_payloads=options.hide_payloads)
        self.moves = Moves()

    def routes(self) -> list[Any]:
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        return [
            Route("/", self.overview, name="overview"),
            Route("/nodes", self.nodes, name="nodes"),
            Route("/partitions", self.partitions, name="partitions"),
            Route("/tasks", self.tasks, name="tasks"),
            Route("/jobs", self.jobs, name="jobs"),
            Route("/jobs/retry-dead", self.retry_dead, methods=["POST"]),
            Route("/jobs/{job_id:int}", self.job, name="job"),
            Route("/jobs/{job_id:int}/retry", self.retry, methods=["POST"]),
            Route("/jobs/{job_id:int}/cancel", self.cancel, methods=["POST"]),
            Route("/keys", self.keys, name="keys"),
            Route("/events", self.events),
            Route("/healthz", self.healthz),
            Mount("/static", app=StaticFiles(packages=[("ringwork.dashboard", "static")]),
                  name="static"),
        ]

    # -- screens ---------------------------------------------------------------------------------

    def overview(self, request: Any) -> Any:
        return self.pages.render(request, "overview.html", data.overview(self.app))

    def nodes(self, request: Any) -> Any:
        return self.pages.render(request, "nodes.html", data.nodes(self.app))

    def partitions(self, request: Any) -> Any:
        view = data.partition_map(self.app)
        owners = {c.partition: (c.owner, c.epoch) for c in view["cells"]}
        self.moves.observe(owners, view["status"]["term"])
        return self.pages.render(request, "partitions.html", {**view, "feed": self.moves.feed()})

    def tasks(self, request: Any) -> Any:
        return self.pages.render(request, "tasks.html", data.tasks(self.app))

    def jobs(self, request: Any) -> Any:
        q = request.query_params
        message = retried_message(q)
        try:
            f = job_filter(q, self.app.settings.partitions)
        except ValueError as exc:
            return self.pages.error(request, 400, "Bad filter", one_line(exc))
        return self.pages.render(request, "jobs.html", {
            "jobs": data.find_jobs(self.app, f), "filter": f, "states": JOB_STATES,
            "tasks": sorted(self.app.tasks), "since": q.get("since", ""), "message": message,
            "dead": data.has_dead(self.app),
        })

    def job(self, request: Any, message: str | None = None, status: int = 200) -> Any:
        job_id = int(request.path_params["job_id"])
        found = data.job(self.app, job_id) if job_id <= MAX_JOB_ID else None
        if found is None:
            return self.pages.error(request, 404, "No such job",
                                    f"no job {job_id} in cluster {self.app.settings.cluster!r}")
        record, attempts = found
        done = DONE.get(request.query_params.get("did", ""))
        return self.pages.render(request, "job.html", {
            "job": record, "attempts": attempts, "message": message, "done": done,
            "payload": json.dumps(record.payload, indent=2, ensure_ascii=False),
            "result": None if record.result is None else json.dumps(record.result, indent=2),
        }, status=status)

    def keys(self, request: Any) -> Any:
        return self.pages.render(request, "keys.html", {"keys": data.blocked(self.app)})

    # -- buttons ---------------------------------------------------------------------------------

    def retry(self, request: Any) -> Any:
        def retry(job_id: int) -> str:
            self.app.retry(job_id)
            return "retried"

        return self._act(request, retry)

    def cancel(self, request: Any) -> Any:
        return self._act(request, self.app.cancel)

    def _act(self, request: Any, action: Any) -> Any:
        from starlette.responses import RedirectResponse

        job_id = int(request.path_params["job_id"])
        if job_id > MAX_JOB_ID:
            return self.pages.error(request, 404, "No such job",
                                    f"no job {job_id} in cluster {self.app.settings.cluster!r}")
        try:
            did = action(job_id)
        except JobNotFound as exc:
            return self.pages.error(request, 404, "No such job", one_line(exc))
        except InvalidJobState as exc:
            return self.job(request, message=one_line(exc), status=409)
        url = f"{request.scope.get('root_path', '')}/jobs/{job_id}?did={did}"
        return RedirectResponse(url, status_code=303)

    async def retry_dead(self, request: Any) -> Any:
        """Every dead job (of the form's task) queued again; answered with a redirect to the
        jobs screen, which says how many (a reload does not retry again)."""
        import anyio
        from starlette.responses import RedirectResponse

        # A urlencoded form read by hand: Starlette's form parser needs python-multipart.
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        task = (form.get("task") or [""])[0].strip() or None
        retried, skipped = await anyio.to_thread.run_sync(
            lambda: self.app.retry_all("dead", task))
        query = urlencode({"retried": retried, "skipped": skipped, **({"task": task} if task
                                                                      else {})})
        return RedirectResponse(f"{request.scope.get('root_path', '')}/jobs?{query}",
                                status_code=303)

    # -- machinery -------------------------------------------------------------------------------

    async def events(self, request: Any) -> Any:
        from starlette.responses import StreamingResponse

        raw = request.query_params.get("limit")
        limit = int(raw) if raw and raw.isdigit() else None
        frames = stream(lambda: data.snapshot(self.app), self.moves, self.options.interval,
                        limit, request.is_disconnected)
        return StreamingResponse(frames, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def healthz(self, request: Any) -> Any:
        import anyio
        from starlette.responses import JSONResponse

        try:
            state = await anyio.to_thread.run_sync(lambda: data.health(self.app))
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "database": one_line(exc)}, 503)
        return JSONResponse({"status": "ok", "database": state})


def retried_message(q: Any) -> str | None:
    """The sentence after a bulk retry, from the numbers its redirect carries (never text)."""
    retried, skipped = q.get("retried", ""), q.get("skipped", "0")
    if not (retried.isdigit() and skipped.isdigit()):
        return None
    n = int(retried)
    line = f"queued {n} dead job{'s' * (n != 1)} again"
    if q.get("task"):
        line += f" (task {q['task']})"
    if int(skipped):
        line += f"; skipped {skipped}: an unfinished job holds its dedupe key"
    return line


def job_filter(q: Any, partitions: int | None = None) -> JobFilter:
    """The jobs screen's query string as a filter; ``ValueError`` in words for a bad one
    (``partitions``: the cluster's count, which a partition must be under)."""
    state = q.get("state") or None
    if state is not None and state not in JOB_STATES:
        raise ValueError(f"unknown job state {state!r}: one of {', '.join(JOB_STATES)}")
    part_text = (q.get("partition") or "").strip()
    if part_text and not part_text.isdigit():
        raise ValueError(f"partition must be a number, not {part_text!r}")
    if part_text and partitions is not None and int(part_text) >= partitions:
        raise ValueError(f"partition must be 0-{partitions - 1} (the cluster has {partitions}), "
                         f"not {part_text}")
    since = (q.get("since") or "").strip()
    try:
        within = parse_duration(since, "since") if since else None
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None
    if within is not None and within > MAX_SINCE:
        raise ValueError(f"since must be at most 100 years, not {since!r}")
    return JobFilter(state=state, task=q.get("task") or None, key=q.get("key") or None,
                     partition=int(part_text) if part_text else None, within=within)
