"""Scheduler hosting: ``--with-scheduler`` starts Offload's scheduler (scheduler.py: RQ's, plus
periodic jobs, sleeping until a job is due) instead of RQ's, and maintenance restarts it only
when one of its locks is free (one ``EXISTS`` instead of a lock script per queue)."""

from __future__ import annotations

from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.scheduler import RQScheduler

from offload.worker.scheduler import SleepingScheduler


class SchedulerHosting:
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
            self.queues,  # type: ignore[attr-defined]
            connection=self.connection,  # type: ignore[attr-defined]
            logging_level=logging_level if logging_level is not None else self.log.level,  # type: ignore[attr-defined]
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,  # type: ignore[attr-defined]
            config=self.flask_app.config,  # type: ignore[attr-defined]
            tasks=self.offload.tasks,  # type: ignore[attr-defined]
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
        keys = [RQScheduler.get_locking_key(queue.name) for queue in self.queues]  # type: ignore[attr-defined]
        return self.connection.exists(*keys) < len(keys)  # type: ignore[attr-defined]
