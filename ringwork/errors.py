"""One exception tree for everything ringwork raises on purpose.

Driver errors (``sqlalchemy.exc``, ``zmq.ZMQError``, ``psycopg``) are translated into these at
the layer that talks to the driver, so callers -- and the CLI, which prints one ``Error:`` line
for any ``RingworkError`` -- never need to know which library failed.
"""

from __future__ import annotations


class RingworkError(Exception):
    """Root of every error ringwork raises deliberately."""


class ConfigurationError(RingworkError):
    """Settings, arguments or the app object are wrong; retrying will not help."""


class AppImportError(ConfigurationError):
    """``MODULE:APP`` could not be imported or does not name an :class:`ringwork.App`."""


class UnknownTaskError(RingworkError):
    """A task name that the app has not registered."""


class PayloadError(RingworkError):
    """A payload that is not JSON-serialisable (or not valid JSON on the command line)."""


class StoredPayloadError(PayloadError):
    """A job's stored payload does not fit its task's payload type. Another attempt would read
    the same row, so the job is dead-lettered at once rather than retried."""


class DatabaseError(RingworkError):
    """The database could not be reached or refused an operation."""


class DatabaseUnavailable(DatabaseError):
    """A transient outage (connection refused, lost, locked): callers back off and retry."""


class DatabaseURLError(DatabaseError, ConfigurationError):
    """The database URL is malformed or names a driver we cannot use."""


class PartitionCountMismatch(ConfigurationError):
    """The app's partition count differs from the one stored for its cluster."""


class SchemaError(DatabaseError):
    """The schema is missing or older than this code and migrations are disabled."""


class JobNotFound(RingworkError):
    """No job with the given id (in this cluster)."""


class InvalidJobState(RingworkError):
    """The operation does not apply to the job's current state (e.g. cancelling a running job)."""


class ResultError(RingworkError):
    """A ``store_result`` task returned a value that cannot be stored (not JSON, or too large):
    the attempt fails with this error, like any exception its handler raised."""


class WaitTimeout(RingworkError, TimeoutError):
    """``app.wait`` ran out of time before the job finished (also a builtin ``TimeoutError``)."""
