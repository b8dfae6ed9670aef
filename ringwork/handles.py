"""What ``@app.task`` returns: the handler, still callable as it was, that can also enqueue.

``resize.enqueue(key, payload)`` reads better than ``app.enqueue("resize", key, payload)`` and
cannot misspell the task's name; with a typed payload (``def resize(job: Job[Resize])``) a type
checker also sees that ``payload`` must be a ``Resize``. Calling the handle calls the handler
itself, unchanged, so a user's unit test can still call ``resize(job)`` directly.

Threads: any, as the App's own enqueue methods.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Protocol

from ringwork.job import Job, P
from ringwork.payloads import PayloadType


class Enqueuer(Protocol):
    """The part of the App a handle enqueues through."""

    def enqueue(self, task: str, key: str, payload: Any = None, *, connection: Any = None,
                **options: Any) -> int: ...

    def enqueue_many(self, jobs: Iterable[Mapping[str, Any]], *,
                     connection: Any = None) -> list[int]: ...

    async def enqueue_async(self, task: str, key: str, payload: Any = None, *,
                            connection: Any = None, **options: Any) -> int: ...


class TaskHandle(Generic[P]):
    """A registered task's handler plus ``enqueue``/``enqueue_many``/``enqueue_async``."""

    def __init__(self, client: Enqueuer, name: str, handler: Callable[..., Any]) -> None:
        self._client = client
        self.name = name
        self.handler = handler
        functools.update_wrapper(self, handler)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.handler(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<ringwork task {self.name!r}>"

    def enqueue(self, key: str, payload: P | Mapping[str, Any] | None = None, *,
                connection: Any = None, **options: Any) -> int:
        """:meth:`ringwork.App.enqueue` for this task: insert one job, return its id."""
        return self._client.enqueue(self.name, key, payload, connection=connection, **options)

    def enqueue_many(self, jobs: Iterable[Mapping[str, Any]], *,
                     connection: Any = None) -> list[int]:
        """:meth:`ringwork.App.enqueue_many` for this task: each item has ``key`` and
        optionally ``payload``, ``run_at``, ``delay``, ``priority``, ``dedupe_key``."""
        return self._client.enqueue_many(
            ({**job, "task": self.name} for job in jobs), connection=connection)

    async def enqueue_async(self, key: str, payload: P | Mapping[str, Any] | None = None, *,
                            connection: Any = None, **options: Any) -> int:
        """:meth:`ringwork.App.enqueue_async` for this task."""
        return await self._client.enqueue_async(self.name, key, payload,
                                                connection=connection, **options)


def typed_handler(handler: Callable[..., Any], payload: PayloadType) -> Callable[..., Any]:
    """``handler`` as the runners call it: the job's stored JSON payload rebuilt as the task's
    type first (a payload that does not fit raises
    :class:`~ringwork.errors.StoredPayloadError`, which dead-letters the job at once)."""
    load = payload.load
    if inspect.iscoroutinefunction(handler):
        async def run_async(job: Job[Any], *rest: Any) -> Any:
            return await handler(dataclasses.replace(job, payload=load(job.payload)), *rest)

        return functools.update_wrapper(run_async, handler)

    def run(job: Job[Any], *rest: Any) -> Any:
        return handler(dataclasses.replace(job, payload=load(job.payload)), *rest)

    return functools.update_wrapper(run, handler)
