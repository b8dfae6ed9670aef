"""Structured logging: a stable event name plus fields, one line per event, as logfmt or JSON.

Operators grep for ``event=partition_assigned`` or ``event=job_failed``; the node id, term and
epoch travel as fields where they matter, so a log of several processes can be merged and read.

Two ways ringwork's records leave the process:

* Inside a user's process (a web app that enqueues, a worker embedded in a service), ringwork
  is a library: the ``ringwork`` logger only holds a ``NullHandler`` and propagates, so the
  records reach whatever the host configured (the root logger, Sentry's handler...) and ringwork
  prints nothing on its own -- not even through logging's last-resort handler.
* The ``ringwork`` command calls :func:`configure`: a handler of its own on stderr, in
  ``logfmt`` (``TIME LEVEL event=... key=value``) or ``json`` (one object a line: ``ts``,
  ``level``, ``event`` and the fields as JSON values, a ``traceback`` if any), and no
  propagation.

Either way each record carries ``record.event`` and ``record.fields`` (the fields as given, not
as text), so any formatter can render them; its message is the logfmt line, built only if a
handler asks for it. Any thread may log.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any

logger = logging.getLogger("ringwork")
logger.addHandler(logging.NullHandler())  # a library prints nothing unless its host says so

#: The values of ``--log-format`` (and ``RINGWORK_LOG_FORMAT``).
FORMATS = ("logfmt", "json")


class EventLine:
    """A record's message: the logfmt line, built on first ``str()`` and then kept."""

    __slots__ = ("_text", "event", "fields")

    def __init__(self, event: str, fields: dict[str, Any]) -> None:
        self.event = event
        self.fields = fields
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            parts = [f"event={self.event}"]
            for key, value in self.fields.items():
                parts.append(f"{key}={logfmt_value(value)}")
            self._text = " ".join(parts)
        return self._text


def logfmt_value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' \t\n"='):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def log_event(event: str, level: int = logging.INFO, /, *, exc_info: Any = None,
              **fields: Any) -> None:
    """Log ``event`` with ``fields`` (and the traceback of ``exc_info``, an exception); cheap
    when the level is disabled: nothing is formatted then. (``exc_info`` is typed ``Any`` only
    so that callers may pass ``**fields`` of any type.)"""
    if not logger.isEnabledFor(level):
        return
    logger.log(level, EventLine(event, fields), exc_info=exc_info,
               extra={"event": event, "fields": fields})


class LogfmtFormatter(logging.Formatter):
    """``TIME LEVEL event=... key=value``: an event stays one line, its traceback (a failed
    job's, attached for error trackers) left out -- the ``error=`` field names the exception,
    and ``ringwork jobs show`` prints the stored traceback. A record that is not an event (a
    crash logged with ``logger.exception``) keeps its traceback below it: in this format, a
    ``Traceback`` is a bug to report."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "event", None) is None:
            return super().format(record)
        return f"{self.formatTime(record)} {record.levelname} {record.getMessage()}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (UTC), ``level``, ``event``, then the fields.

    A record that is not an event (``logger.exception("...")``) has ``event`` ``"log"`` and its
    text under ``message``; a traceback goes under ``traceback``. A value JSON cannot hold (an
    exception, a path) is written as its ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc)
        doc: dict[str, Any] = {
            "ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "event": getattr(record, "event", None) or "log",
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                doc[f"field_{key}" if key in doc else key] = value
        else:
            doc["message"] = record.getMessage()
        if record.name != "ringwork":
            doc["logger"] = record.name
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


_configured: str | None = None  # the format configure() set up; None: a library


def configure(level: str | int = "INFO", fmt: str = "logfmt",
              stream: IO[str] | None = None) -> None:
    """Log to ``stream`` (stderr) in ``fmt``; called by the CLI, never on import."""
    global _configured
    if fmt not in FORMATS:
        raise ValueError(f"log format must be logfmt or json, not {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(LogfmtFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level if isinstance(level, int) else level.upper())
    logger.propagate = False
    _configured = fmt


def current_format() -> str | None:
    """The format :func:`configure` set up in this process (``None``: not configured)."""
    return _configured


def has_output() -> bool:
    """Would a ringwork record be written anywhere (a handler other than a NullHandler on the
    way up)? A spawned child process without one configures its own."""
    node: logging.Logger | None = logger
    while node is not None:
        if any(not isinstance(h, logging.NullHandler) for h in node.handlers):
            return True
        node = node.parent if node.propagate else None
    return False
