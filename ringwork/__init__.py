"""ringwork: Kafka-style consumer-group work distribution over SQL and ZeroMQ.

Everything a user's code touches is importable from here: the app and its tasks, the job
records handlers and ``get_job`` hand out, the settings, and the errors worth catching. Every
other module is an implementation detail that may change between releases;
tests/unit/test_public_api.py pins this list.
"""

from ringwork.app import App, Task
from ringwork.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    DatabaseURLError,
    InvalidJobState,
    JobNotFound,
    PartitionCountMismatch,
    PayloadError,
    ResultError,
    RingworkError,
    SchemaError,
    StoredPayloadError,
    UnknownTaskError,
    WaitTimeout,
)
from ringwork.handles import TaskHandle
from ringwork.job import AttemptRecord, Job, JobRecord, JobState, NewJob
from ringwork.partitioner import partition_for
from ringwork.retry import Retry
from ringwork.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "App",
    "AttemptRecord",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseURLError",
    "DatabaseUnavailable",
    "InvalidJobState",
    "Job",
    "JobNotFound",
    "JobRecord",
    "JobState",
    "NewJob",
    "PartitionCountMismatch",
    "PayloadError",
    "ResultError",
    "Retry",
    "RingworkError",
    "SchemaError",
    "Settings",
    "StoredPayloadError",
    "Task",
    "TaskHandle",
    "UnknownTaskError",
    "WaitTimeout",
    "__version__",
    "partition_for",
]
