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
import math
import os
import re
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
    #: Retention (seconds; ``RINGWORK_RETAIN_*`` and the worker's flags also take ``30s``,
    #: ``2h``, ``7d``). The leader deletes finished jobs this long after they finished, and the
    #: registry rows of nodes not seen for ``retain_nodes``. 0: keep forever.
    retain_succeeded: float = 86400.0
    retain_cancelled: float = 7 * 86400.0
    retain_dead: float = 30 * 86400.0
    #: Far above ``session_timeout`` (at least 60 s and twice it): a node this long silent was
    #: evicted long ago.
    retain_nodes: float = 3600.0
    #: Seconds between two rounds of the leader's housekeeping (the pruning above).
    housekeeping_interval: float = 60.0

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
        for name in RETENTION_FIELDS:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigurationError(
                    f"{name} must be a number of seconds >= 0 (0: keep forever), not {value!r}"
                )
        # A younger row may be a live node's (or one status should still show as stale).
        floor = max(60.0, 2 * self.session_timeout)
        if 0 < self.retain_nodes < floor:
            raise ConfigurationError(
                f"retain_nodes must be 0 or at least {floor:g} s (60 s and 2 x session_timeout),"
                f" not {self.retain_nodes:g}"
            )
        if not self.housekeeping_interval > 0:
            raise ConfigurationError(
                f"housekeeping_interval must be positive, not {self.housekeeping_interval!r}"
            )

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


#: Settings that are ages: their variables also take a duration (``30s``, ``2h``, ``7d``).
RETENTION_FIELDS = ("retain_succeeded", "retain_cancelled", "retain_dead", "retain_nodes")

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*", re.IGNORECASE)


def parse_duration(text: str, what: str = "duration") -> float:
    """``30s``, ``15m``, ``2h``, ``7d``, ``1w`` or plain seconds -> seconds (>= 0).

    Raises :class:`ConfigurationError` with a one-line message for anything else.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ConfigurationError(
            f"{what} must be a duration (a number of seconds, or with s, m, h, d or w: "
            f"30s, 2h, 7d), not {text!r}"
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def host_of(address: str) -> str:
    """``tcp://HOST:PORT`` (or ``HOST:PORT``, or ``HOST``) -> ``HOST``; ``*`` -> ``0.0.0.0``."""
    rest = address.split("://", 1)[-1]
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    return "0.0.0.0" if host in ("*", "") else host.strip("[]")


def _parse(name: str, raw: str, current: Any) -> Any:
    if name in RETENTION_FIELDS:
        return parse_duration(raw, f"RINGWORK_{name.upper()}")
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
