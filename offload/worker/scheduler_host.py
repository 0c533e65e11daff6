"""Scheduler hosting: ``--with-scheduler`` starts Offload's scheduler (scheduler.py: RQ's, plus
periodic jobs, sleeping until a job is due) instead of RQ's, and maintenance restarts it only
when one of its locks is free (one ``EXISTS`` instead of a lock script per queue)."""

from __future__ import annotations

from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.scheduler import RQScheduler

from offload.worker.base import WorkerBase
from offload.worker.scheduler import SleepingScheduler


class SchedulerHosting(WorkerBase):
    """Worker mixin: runs the SleepingScheduler in the scheduler process RQ would start."""

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        # RQ 3.0.0's own method (private: RQ has no hook for the scheduler class), with ours.
        self.scheduler = SleepingScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
            config=self.flask_app.config,
            tasks=self.offload.tasks,
        )
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            if burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()
                finally:
                    self.scheduler.release_locks()
                    self.scheduler.register_death()
            else:
                self.scheduler.start()

    def _restart_scheduler_if_stopped(self) -> None:
        """Start the scheduler again if its process ended and one of its locks is free."""
        if self.scheduler and self._scheduler_lock_free():
            process = self.scheduler._process
            if process is None or not process.is_alive():
                self.scheduler.acquire_locks(auto_start=True)

    def _scheduler_lock_free(self) -> bool:
        keys = [RQScheduler.get_locking_key(queue.name) for queue in self.queues]
        return self.connection.exists(*keys) < len(keys)
