"""ringwork: Kafka-style consumer-group work distribution over SQL and ZeroMQ.

The public surface is small on purpose; everything else is an implementation module.
"""

from ringwork.app import App, Task
from ringwork.errors import RingworkError
from ringwork.job import Job, JobRecord, JobState
from ringwork.partitioner import partition_for

__all__ = ["App", "Job", "JobRecord", "JobState", "RingworkError", "Task", "partition_for"]
__version__ = "0.1.0"
