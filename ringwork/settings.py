"""One frozen settings object, read once, with every default documented in one place.

Where a value comes from, highest precedence first (this is the one place that says so):

1. CLI flags of ``ringwork worker`` and ``ringwork run`` (``--concurrency 8``), one per field
   (:mod:`ringwork.cli.settings_flags`), applied by ``App.configure``. A flag left out changes
   nothing. A flag reads its field's variable (step 2) when it is not given, so the two cannot
   disagree.
2. ``RINGWORK_<FIELD>`` environment variables, one per field below (``RINGWORK_PARTITIONS``,
   ``RINGWORK_CLUSTER``, ...), read when the app's settings are first used. Empty means unset.
3. The keyword arguments actually passed to ``App(database_url=, partitions=, cluster=)``.
4. The ``Settings`` object passed as ``App(settings=...)``.
5. The defaults below.

So configuration in code (3, 4) sets what a deployment (2, 1) may override, and ``None`` means
"not given" at every step. Every field, its flag, its variable and its default are listed in the
table of docs/operations.md ("Settings"); tests/unit/test_settings_table.py fails when a field
lacks any of them. Whatever the source, a value is checked here (:meth:`Settings.validate`), so a
bad one is a one-line :class:`ConfigurationError` before anything starts.

Components receive a ``Settings`` rather than a dozen constructor parameters.
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
    #: Static membership: a stable name for this worker, used as its node id. A node restarted
    #: under the same name within ``session_timeout`` gets its partitions back without a
    #: rebalance (its stop does not hand them over). Empty: a fresh id per process.
    node_name: str = ""

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
        """Each field on its own (:func:`field_problem`), then the relations between fields."""
        for field in dataclasses.fields(self):
            problem = field_problem(field.name, getattr(self, field.name))
            if problem:
                raise ConfigurationError(problem)
        if self.retry_max < self.retry_base:
            raise ConfigurationError(
                f"retry_max ({self.retry_max:g} s) must be at least retry_base "
                f"({self.retry_base:g} s)"
            )
        if not session_fits_heartbeats(self.session_timeout, self.heartbeat_interval):
            raise ConfigurationError(
                f"session_timeout ({self.session_timeout:g} s) must be at least "
                f"{1 / HEARTBEATS_PER_SESSION:g} x heartbeat_interval "
                f"({self.heartbeat_interval:g} s): two heartbeats must fit in a member's lease"
            )
        socket_ports(BindAddress.parse(self.bind), self.pub_port)
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
            variable = env_var(field.name)
            raw = environ.get(variable)
            if raw is None or raw == "":
                continue
            value = parse_setting(field.name, raw, variable)
            problem = field_problem(field.name, value)
            if problem:
                raise ConfigurationError(f"{variable}={raw!r}: {problem}")
            changes[field.name] = value
        return self.replace(**changes)


def env_var(name: str) -> str:
    """The environment variable of the setting ``name``: ``RINGWORK_`` and its name in capitals."""
    return f"RINGWORK_{name.upper()}"


#: ``ProtocolConfig.for_session`` gives a member a lease of ``session_timeout`` minus a margin of
#: 1/6 of it, and the leader a lease of 5/6 of it; two heartbeats must fit in both, so
#: ``heartbeat_interval`` may be at most 5/12 of the session timeout (the session at least 2.4
#: heartbeats). Written here because settings sit below the protocol; a unit test compares the
#: two on a grid of values.
HEARTBEATS_PER_SESSION = 5 / 12


def session_fits_heartbeats(session_timeout: float, heartbeat_interval: float) -> bool:
    scale = session_timeout / 3.0  # the protocol's default session, which its margins scale by
    lease = min(session_timeout - 0.5 * scale, 2.5 * scale)
    return heartbeat_interval * 2 <= lease


_POSITIVE = ("poll_interval", "retry_base", "retry_max", "db_backoff_max",
             "heartbeat_interval", "session_timeout", "revoke_timeout")
_AT_LEAST_ONE = ("partitions", "concurrency")
_NOT_EMPTY = ("database_url", "cluster")
_PORT_OR_MINUS_ONE = ("pub_port", "metrics_port")
#: Longest node name: it is a node id, stored in ``String(200)`` columns and carried in every
#: message and log line, so well below both.
NODE_NAME_MAX = 64
#: A node name: letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit. Nothing
#: that a log line, a shell or a SQL LIKE would read as syntax.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def node_name_problem(value: str) -> str | None:
    """What is wrong with a node name (``None``: nothing; the empty name means unnamed)."""
    if value == "":
        return None
    if len(value) > NODE_NAME_MAX:
        return f"node_name must be at most {NODE_NAME_MAX} characters, not {len(value)}"
    if NODE_NAME.fullmatch(value) is None:
        return (f"node_name must be letters, digits, '.', '_' or '-', starting with a letter or "
                f"digit, not {value!r}")
    return None


def field_problem(name: str, value: Any) -> str | None:
    """What is wrong with one setting's value on its own (``None``: nothing).

    A field with no rule of its own still must be a finite number not below zero if it is a
    number: NaN and infinity compare false with everything, so without this check they would
    pass every range test and turn up later as a wait that never ends.
    """
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if name in RETENTION_FIELDS and not (number and math.isfinite(value) and value >= 0):
        return f"{name} must be a number of seconds >= 0 (0: keep forever), not {value!r}"
    if not number:
        if name in _NOT_EMPTY and not value:
            return f"{name} must not be empty"
        if name == "node_name" and isinstance(value, str):
            return node_name_problem(value)
        return None
    if not math.isfinite(value):
        return f"{name} must be a finite number, not {value}"
    if name in _POSITIVE and not value > 0:
        return f"{name} must be a positive number of seconds, not {value:g}"
    if name in _AT_LEAST_ONE and value < 1:
        return f"{name} must be at least 1, not {value:g}"
    if name in _PORT_OR_MINUS_ONE:
        if not -1 <= value <= 65535:
            return f"{name} must be a port 0-65535, or -1, not {value:g}"
    elif value < 0:
        return f"{name} must not be negative, not {value:g}"
    return None


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


def parse_setting(name: str, raw: str, source: str | None = None) -> Any:
    """Text (a variable's or a flag's) as the type of the field ``name``'s default.

    ``source`` names where the text came from in the error (default: the field's variable; the
    empty string: nowhere, for a caller that names it itself).
    """
    current = getattr(_DEFAULTS, name)
    where = env_var(name) if source is None else source
    if name in RETENTION_FIELDS:
        return parse_duration(raw, where or name)
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
        kind = {"bool": "boolean (1/0, true/false, yes/no, on/off)", "int": "whole number",
                "float": "number"}[type(current).__name__]
        text = f"{where}={raw!r}" if where else repr(raw)
        raise ConfigurationError(f"{text} is not a valid {kind}") from None
    return raw


_DEFAULTS = Settings()
