"""Log lines as logfmt or JSON, and a library logger that leaves the output to its host.

Issue 13, item 4: ``--log-format json`` gives one JSON object per line with the fields as
values (not text); inside a user's process (no CLI) ringwork's records go up to the root
logger and ringwork prints nothing by itself.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ringwork import log
from ringwork.log import configure, log_event


@pytest.fixture
def restore_logger() -> Iterator[None]:
    logger = logging.getLogger("ringwork")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_json_lines_carry_the_fields_as_values(restore_logger: None) -> None:
    out = io.StringIO()
    configure("DEBUG", "json", stream=out)
    log_event("partition_assigned", logging.INFO, node="n1", partitions=[1, 2], epoch=7,
              ratio=0.5, reason='a "quoted" word\nand a line')
    (line,) = out.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["event"] == "partition_assigned" and doc["level"] == "INFO"
    assert doc["ts"].endswith("Z") and "T" in doc["ts"]
    assert doc["node"] == "n1" and doc["partitions"] == [1, 2] and doc["epoch"] == 7
    assert doc["ratio"] == 0.5 and doc["reason"] == 'a "quoted" word\nand a line'


def test_json_keeps_the_traceback_and_renders_what_json_cannot_hold(restore_logger: None) -> None:
    out = io.StringIO()
    configure("INFO", "json", stream=out)
    try:
        raise ValueError("boom")
    except ValueError as exc:
        log_event("job_failed", logging.WARNING, exc_info=exc, error=exc, job=3)
    logging.getLogger("ringwork").error("plain message %s", 5)
    first, second = (json.loads(x) for x in out.getvalue().splitlines())
    assert first["error"] == "boom" and first["job"] == 3
    assert "Traceback" in first["traceback"] and "ValueError: boom" in first["traceback"]
    assert second["event"] == "log" and second["message"] == "plain message 5"


def test_logfmt_stays_one_key_value_line(restore_logger: None) -> None:
    out = io.StringIO()
    configure("INFO", "logfmt", stream=out)
    try:
        raise ValueError("x=1")
    except ValueError as exc:  # a job's traceback: for error trackers, not this line
        log_event("job_failed", logging.WARNING, exc_info=exc, job=3, error="Bad thing: x=1")
        logging.getLogger("ringwork").exception("node loop crashed")  # a crash keeps its stack
    first, *rest = out.getvalue().splitlines()
    assert first.endswith(' WARNING event=job_failed job=3 error="Bad thing: x=1"')
    assert rest[0].endswith(" ERROR node loop crashed") and rest[1].startswith("Traceback")


def test_the_event_and_fields_travel_on_the_record_for_any_handler(
        restore_logger: None, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("ringwork")
    logger.handlers[:], logger.propagate = [logging.NullHandler()], True  # as a library
    with caplog.at_level(logging.INFO, logger="ringwork"):
        log_event("node_joined", node="n2", term=4)
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "node_joined"]
    assert record.fields == {"node": "n2", "term": 4}  # type: ignore[attr-defined]
    assert record.getMessage() == "event=node_joined node=n2 term=4"


def test_a_disabled_level_builds_nothing(restore_logger: None) -> None:
    class Loud:
        def __str__(self) -> str:
            raise AssertionError("formatted although the level is off")

    configure("WARNING", "json", stream=io.StringIO())
    log_event("noise", logging.DEBUG, value=Loud())
    configure("WARNING", "logfmt", stream=io.StringIO())
    log_event("noise", logging.INFO, value=Loud())


def test_an_unknown_format_is_refused(restore_logger: None) -> None:
    with pytest.raises(ValueError, match="logfmt or json"):
        configure("INFO", "xml")


LIBRARY = r"""
import io, logging, sys
import ringwork, ringwork.cli
from ringwork.log import log_event
logger = logging.getLogger("ringwork")
assert logger.propagate, "the library logger must propagate"
assert all(isinstance(h, logging.NullHandler) for h in logger.handlers), logger.handlers
log_event("lonely", logging.ERROR, job=1)          # no handler anywhere: nothing printed
root = io.StringIO()
logging.basicConfig(stream=root, level=logging.INFO, format="%(name)s|%(message)s")
log_event("seen", logging.WARNING, job=2)
sys.stdout.write(root.getvalue())
"""


def test_inside_a_users_process_records_go_to_the_root_logger_and_nothing_prints() -> None:
    out = subprocess.run([sys.executable, "-c", LIBRARY], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # not even logging's last-resort handler
    assert out.stdout == "ringwork|event=seen job=2\n"


def test_the_format_in_use_is_known_for_child_processes(restore_logger: None) -> None:
    configure("INFO", "json", stream=io.StringIO())
    assert log.current_format() == "json"
