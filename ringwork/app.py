"""The App: what user code imports -- its tasks, its jobs' database, the cluster they run in.

An ``App`` touches no database until it is used, so ``app.partition_for(key)`` works offline and
importing a module that defines an app is free. The store is created lazily, once per App. The
App is three parts: the task registry (:mod:`ringwork.tasks`), the job client
(:mod:`ringwork.client`: enqueue, inspect, cancel, retry; :mod:`ringwork.client_async`: its
asyncio side) and, here, the settings, the store and the wake-up sender they share.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ringwork.client import JobClient
from ringwork.client_async import AsyncJobClient
from ringwork.errors import ConfigurationError
from ringwork.settings import Settings
from ringwork.tasks import MAX_DELAY, Handler, PartitionCallback, Task, Tasks, check_timeout
from ringwork.wakeup import WakeSender

if TYPE_CHECKING:
    from collections.abc import Callable

    from ringwork.inline import Testing
    from ringwork.store import Store

__all__ = ["MAX_DELAY", "App", "Handler", "PartitionCallback", "Task", "check_timeout"]


class App(Tasks, JobClient, AsyncJobClient):
    """A ringwork application: tasks, their jobs' database, and the cluster they run in.

    ``settings`` is the app's configuration in code; ``database_url``, ``partitions`` and
    ``cluster``, when passed, replace those fields of it (left out, they change nothing: the
    defaults live in :class:`~ringwork.settings.Settings` alone, so an explicit ``settings=``
    is never overridden by a keyword's default). ``RINGWORK_*`` variables and CLI flags override
    both; the whole order is in :mod:`ringwork.settings`.
    """

    def __init__(
        self,
        database_url: str | None = None,
        partitions: int | None = None,
        cluster: str | None = None,
        *,
        settings: Settings | None = None,
    ) -> None:
        base = settings or Settings()
        self._app_settings = base.replace(
            database_url=database_url, partitions=partitions, cluster=cluster
        )
        Tasks.__init__(self)
        self._settings: Settings | None = None
        self._store: Store | None = None
        self._lock = threading.Lock()
        self._waker: WakeSender | None = None

    # -- configuration -------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The effective settings: App arguments overlaid with ``RINGWORK_*`` variables."""
        if self._settings is None:
            self._settings = self._app_settings.with_environment()
        return self._settings

    def configure(self, **overrides: Any) -> None:
        """Apply CLI-level overrides (``None`` = not given). Only before the store is opened."""
        if self._store is not None:
            raise ConfigurationError("configure() must be called before the app is used")
        self._settings = self.settings.replace(**overrides)

    @property
    def store(self) -> Store:
        """The app's store, created on first use (this is when the database is first touched)."""
        with self._lock:
            if self._store is None:
                from ringwork.store import Store

                s = self.settings
                self._store = Store(
                    s.database_url, cluster=s.cluster, partitions=s.partitions, migrate=s.migrate
                )
            return self._store

    def close(self) -> None:
        """Release database connections and sockets held by this app."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            if self._waker is not None:
                self._waker.close()
                self._waker = None

    # -- the dashboard ---------------------------------------------------------------------------

    def dashboard(self, read_only: bool = False, hide_payloads: bool = False, prefix: str = "",
                  **options: Any) -> Any:
        """The web dashboard of this app, as an ASGI application to mount in your own
        Starlette or FastAPI app (``Mount("/ringwork", app=app.dashboard())``) or serve with
        ``ringwork dashboard MODULE:APP``. ``read_only``: no buttons, every POST refused;
        ``hide_payloads``: payloads and results never shown; ``prefix``: the path it serves
        under when it runs alone; ``interval``: seconds between live reads (1). Basic auth
        from ``RINGWORK_DASHBOARD_USER`` / ``RINGWORK_DASHBOARD_PASSWORD`` (docs/dashboard.md).
        """
        from ringwork.dashboard import build  # above the app: see tests/unit/test_layers.py

        return build(self, read_only=read_only, hide_payloads=hide_payloads, prefix=prefix,
                     **options)

    # -- testing --------------------------------------------------------------------------------

    def testing(self, database_url: str | None = None) -> Testing:
        """``with app.testing() as t:`` -- jobs enqueued in the block go to a temporary SQLite
        database (or ``database_url``) and ``t.run_pending()`` / ``t.drain()`` /
        ``t.advance(seconds)`` run them inline, as a worker would; ``t.jobs(task=, state=)``
        to assert on. For the user's own tests: no cluster, no thread (:mod:`ringwork.inline`).
        """
        from ringwork.inline import Testing  # above the worker: see tests/unit/test_layers.py

        return Testing(self, database_url)

    def _use_database(self, url: str) -> Callable[[], None]:
        """Point the app at ``url`` until the returned function is called (for :meth:`testing`)."""
        with self._lock:
            saved = (self._settings, self._store, self._waker)
            self._settings = self.settings.replace(database_url=url)
            self._store = self._waker = None

        def restore() -> None:
            self.close()
            with self._lock:
                self._settings, self._store, self._waker = saved

        return restore

    def _wake(self, partitions: set[int]) -> None:
        """Nudge the workers so an idle owner starts the new jobs now, not at its next poll.

        On PostgreSQL the enqueue statement already sent a NOTIFY in its transaction; a second
        wake-up by UDP would only make each worker claim twice (measured: W2 p50 3.7 -> 3.3 ms
        without it), so the nudge is for SQLite, which has no notifications.
        """
        store = self.store
        if store.dialect == "postgresql":
            return
        with self._lock:
            if self._waker is None:
                self._waker = WakeSender(store)
            waker = self._waker
        waker.nudge(partitions)
