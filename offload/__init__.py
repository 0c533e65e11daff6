"""Offload: slow work out of Flask requests, onto RQ workers over Redis or Valkey.

    from offload import Offload

    offload = Offload(app)

    @offload.task(title="Add two numbers")
    def add(a: int, b: int) -> int:
        return a + b

    job = offload.submit("add", {"a": 1, "b": 2})

Run its worker with ``flask --app myapp offload worker``. The pages, the JSON API and the
operators' console are blueprints in :mod:`offload.web`.
"""

from rq import Retry

from offload.exceptions import InvalidParams, OffloadError, UnknownTask
from offload.extension import Offload
from offload.progress import report_progress
from offload.registry import Access, Task
from offload.retries import PermanentError, RetryLater

__version__ = "0.2.0"

__all__ = [
    "Access",
    "InvalidParams",
    "Offload",
    "OffloadError",
    "PermanentError",
    "Retry",
    "RetryLater",
    "Task",
    "UnknownTask",
    "report_progress",
]
