"""What the worker's mixins are written against: RQ's ``Worker``, plus what they share with each
other. For the type checker only; at run time each mixin is a plain class, and ``OffloadWorker``
(worker.py) puts them in front of ``rq.Worker``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from typing import Any, TypeVar

    from flask import Flask
    from rq import Queue, Worker
    from rq.job import Job

    from offload.state import State
    from offload.worker.jobprocess import JobProcess
    from offload.worker.parenting import SharedFlag

    _T = TypeVar("_T")

    class WorkerBase(Worker):
        """RQ's worker as the mixins see it, with what one mixin provides to the others."""

        flask_app: Flask  # construction
        last_cleaned_at: datetime | None  # type: ignore[assignment]  # RQ declares it None, then sets datetimes
        _current_job_id: str | None  # jobprocess, read by crash_reruns
        _killed_job_id: str | None  # crash_reruns
        slot: int  # slots
        slots: int  # slots, set by construction
        _init_arguments: tuple[tuple[Any, ...], dict[str, Any]] | None  # slots, set by construction
        _start_with_execution: bool  # roundtrips, set by jobprocess
        _started_job_id: str | None  # roundtrips, set by jobprocess
        _end_in_one: bool  # roundtrips, set by jobprocess
        _ending_flag: SharedFlag | None  # lease, set by jobprocess
        _job_process: JobProcess | None  # jobprocess, read by lease
        _idle_written: bool  # roundtrips, read by jobprocess
        job_came_while_waiting: bool  # roundtrips, read by holds
        _stop_signalled: bool  # outages, read by scheduler_host

        @property
        def offload(self) -> State: ...  # appcontext

        def _until_redis_answers(self, what: str, action: Callable[..., _T], *args: Any, **kwargs: Any) -> _T: ...

        def _settle_abandoned_jobs(self, queue: Queue) -> None: ...  # crash_reruns

        def _end_attempt(self, job: Job, outcome: str, error: str) -> dict[str, Any]: ...  # attempts

        def _restart_scheduler_if_stopped(self) -> None: ...  # scheduler_host

        def hold_end_write(self, job: Job, mapping: dict[Any, str]) -> bool: ...  # roundtrips

        def _lease_margin(self) -> float: ...  # lease, read by roundtrips

        def _mark_ending(self, on: bool) -> None: ...  # lease, called by roundtrips

        def _wait_for_job(
            self, timeout: int | None, max_idle_time: int | None
        ) -> tuple[Job, Queue] | None: ...  # waiting

        def _log_taken(self, job: Job, queue: Queue) -> None: ...  # waiting, called by roundtrips

else:
    WorkerBase = object
