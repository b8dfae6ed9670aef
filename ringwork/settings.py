"""One frozen settings object, read once, with every default documented in one place.

Where a value comes from, highest precedence first (this is the one place that says so):

1. CLI flags (``ringwork worker --concurrency 8``), applied by ``App.configure``. A flag left
   out changes nothing. Flags that name a variable (``--database-url`` and
   ``RINGWORK_DATABASE_URL``) read the same value as step 2, so the two cannot disagree.
2. ``RINGWORK_<FIELD>`` environment variables, one per field below (``RINGWORK_PARTITIONS``,
   ``RINGWORK_CLUSTER``, ...), read when the app's settings are first used. Empty means unset.
3. The keyword arguments actually passed to ``App(database_url=, partitions=, cluster=)``.
4. The ``Settings`` object passed as ``App(settings=...)``.
5. The defaults below.

So configuration in code (3, 4) sets what a deployment (2, 1) may override, and ``None`` means
"not given" at every step. Components receive a ``Settings`` rather than a dozen constructor
parameters.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ringwork.addresses import NEXT_PORT, BindAddress, socket_ports
from ringwork.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///ringwork.db"


@dataclass(frozen=True, kw_only=True)
class Settings:
    #: Where jobs, partition epochs and the node registry live. SQLite file by default.
    database_url: str = DEFAULT_DATABASE_URL
    #: Name of the consumer group; several clusters can share one database.
    cluster: str = "default"
    #: Fixed per cluster (stored in the database); a mismatch is an error, never a silent remap.
    partitions: int = 64
    #: Jobs in flight per worker process (threads for plain handlers, tasks for async ones).
    #: Handlers are usually I/O bound, so well above the core count; it also bounds how many
    #: jobs one database round claims and completes, so a higher value costs fewer commits per
    #: job. Lower it for CPU-bound handlers.
    concurrency: int = 32
    #: Backstop poll when no wake-up arrives (wake-ups normally start a job within milliseconds);
    #: also how soon a delayed/retried job becomes visible to an idle worker.
    poll_interval: float = 1.0
    #: On SIGTERM/SIGINT, how long in-flight jobs may take to finish before the worker exits anyway.
    shutdown_grace: float = 30.0
    #: Apply pending migrations on start (workers, enqueue). ``--no-migrate`` turns it off.
    migrate: bool = True
    #: Retry backoff: ``retry_base * 2**(attempt-1)``, times a jitter factor in [0.5, 1.5),
    #: capped at ``retry_max`` seconds. Jitter spreads a burst of failures over time.
    retry_base: float = 1.0
    retry_max: float = 600.0
    #: Longest pause between attempts to reach a database that is down.
    db_backoff_max: float = 5.0
    #: Cluster protocol timings (see docs/protocol.md for why these values). Failover takes about
    #: ``session_timeout`` plus a rebalance; a shorter timeout fails over faster but risks false
    #: evictions on an overloaded machine.
    heartbeat_interval: float = 0.5
    session_timeout: float = 3.0
    revoke_timeout: float = 10.0
    #: Where this worker's ROUTER listens, and the address other processes use to reach it
    #: (needed when binding to all interfaces). ``*`` as the port: any free port.
    bind: str = "tcp://127.0.0.1:*"
    advertise: str = ""
    #: The PUB socket's port on the bind host. -1: the bind port + 1 (any free port when the bind
    #: port is ``*``); 0: any free port. Fixed ports let a firewall be written in advance.
    pub_port: int = NEXT_PORT
    #: Serve Prometheus metrics on this port of the bind host (-1: off; 0: any free port, logged
    #: as ``event=metrics_serving port=N``).
    metrics_port: int = -1
    #: A key file from ``ringwork keys``: encrypt and authenticate every cluster socket (CURVE).
    curve_key_file: str = ""

    @property
    def bind_host(self) -> str:
        """The host of ``bind`` (``0.0.0.0`` for ``*``): wake-ups and metrics listen there too."""
        return host_of(self.bind)

    @property
    def advertise_host(self) -> str | None:
        """The host other processes reach this worker at, if set apart from ``bind``."""
        return host_of(self.advertise) if self.advertise else None

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied; ``None`` values mean "not given" and are ignored."""
        given = {k: v for k, v in changes.items() if v is not None}
        settings = dataclasses.replace(self, **given)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.partitions < 1:
            raise ConfigurationError(f"partitions must be at least 1, not {self.partitions}")
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.poll_interval <= 0 or self.shutdown_grace < 0:
            raise ConfigurationError("poll_interval must be positive and shutdown_grace >= 0")
        if not self.cluster:
            raise ConfigurationError("cluster name must not be empty")
        socket_ports(BindAddress.parse(self.bind), self.pub_port)

    def with_environment(self, environ: Mapping[str, str] | None = None) -> Settings:
        """Apply ``RINGWORK_*`` variables, e.g. ``RINGWORK_DATABASE_URL``."""
        environ = os.environ if environ is None else environ
        changes: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            raw = environ.get(f"RINGWORK_{field.name.upper()}")
            if raw is None or raw == "":
                continue
            changes[field.name] = _parse(field.name, raw, getattr(self, field.name))
        return self.replace(**changes)


def host_of(address: str) -> str:
    """``tcp://HOST:PORT`` (or ``HOST:PORT``, or ``HOST``) -> ``HOST``; ``*`` -> ``0.0.0.0``."""
    rest = address.split("://", 1)[-1]
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    return "0.0.0.0" if host in ("*", "") else host.strip("[]")


def _parse(name: str, raw: str, current: Any) -> Any:
    try:
        if isinstance(current, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
    except ValueError:
        raise ConfigurationError(
            f"RINGWORK_{name.upper()}={raw!r} is not a valid {type(current).__name__}"
        ) from None
    return raw
