"""Structured logging: a stable event name plus key=value fields, one line per event.

Operators grep for ``event=partition_assigned`` or ``event=job_failed``; the node id, term and
epoch travel as fields where they matter, so a log of several processes can be merged and read.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

logger = logging.getLogger("ringwork")


def log_event(event: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log ``event`` with ``fields``; cheap when the level is disabled."""
    if not logger.isEnabledFor(level):
        return
    parts = [f"event={event}"]
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' \t\n"='):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        parts.append(f"{key}={text}")
    logger.log(level, " ".join(parts))


def configure(level: str | int = "INFO") -> None:
    """Log to stderr with timestamps; called by the CLI, never on import."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("ringwork")
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else level.upper())
    root.propagate = False
