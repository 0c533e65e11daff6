"""Scheduler hosting: ``--with-scheduler`` starts Offload's scheduler (scheduler.py: RQ's, plus
periodic jobs, sleeping until a job is due) instead of RQ's, and maintenance restarts it only
when one of its locks is free (one ``EXISTS`` instead of a lock script per queue).

Once the worker is asked to stop, it takes no scheduler lock and starts no scheduler: a warm stop
during a job stops the scheduler at the signal (RQ), and the maintenance pass after the job found
its locks free, took all four again and started a scheduler that enqueued periodic jobs, only to
stop it and exit (seen by a tester)."""

from __future__ import annotations

from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.scheduler import RQScheduler

from offload import ondemand
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
        if self._stopping():
            return  # signalled before RQ's loop began (registration.py): no scheduler to stop again
        # RQ 3.0.0's own method (private: RQ has no hook for the scheduler class), with ours.
        # It also schedules the on-demand queues, which no long-lived worker listens on: else a
        # job scheduled there (or a periodic one) would never be moved to its queue, nor a worker
        # started for it.
        config = self.flask_app.config
        names = [queue.name for queue in self.queues]
        extra = [name for name in config["OFFLOAD_ONDEMAND_QUEUES"] if name not in names]
        queues = [
            *self.queues,
            *(self.queue_class(name, connection=self.connection, serializer=self.serializer) for name in extra),
        ]
        backend = None
        if config["OFFLOAD_ONDEMAND_QUEUES"]:
            with self.flask_app.app_context():
                try:
                    backend = ondemand.make_backend(config)
                except ondemand.OnDemandError as exc:
                    self.log.error("Scheduler: on-demand queues get no worker when their jobs are due: %s", exc)
        self.scheduler = SleepingScheduler(
            queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
            config=config,
            tasks=self.offload.tasks,
            ondemand_backend=backend,
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
        """Start the scheduler again if its process ended and one of its locks is free (never once stopping)."""
        if self.scheduler and not self._stopping() and self._scheduler_lock_free():
            process = self.scheduler._process
            if process is None or not process.is_alive():
                self.scheduler.acquire_locks(auto_start=True)

    def _scheduler_lock_free(self) -> bool:
        assert self.scheduler is not None
        keys = [RQScheduler.get_locking_key(name) for name in self.scheduler._queue_names]
        return self.connection.exists(*keys) < len(keys)

    def _stopping(self) -> bool:
        """True once the worker was asked to stop (a stop signal or a shutdown command)."""
        return self._stop_requested or self._stop_signalled
