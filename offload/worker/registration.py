"""Registration upkeep: a worker whose registration vanished from Redis registers again.

RQ registers a worker once, at birth, and from then on only renews its key's expiry. A Redis
without persistence that restarts comes back empty: ``rq:workers`` and every worker's key are
gone while the workers go on running jobs, so nothing lists them (the operators' page says no
worker runs; anything that scales on ``offload_workers_alive`` starts more). Each maintenance pass
(every WORKER_MAINTENANCE_INTERVAL) checks the worker's key and its entry in ``rq:workers`` in
one round trip, and writes both again when either is gone, saying so as an error. The same pass
runs the host app's Redis hygiene check on its schedule (redis_hygiene.py), at once after a
loss, which notices that Redis lost its data and counts it for the operators and /metrics.

A stop signal that comes once the worker has registered but before RQ's loop installs its
handlers (RQ starts the scheduler in between) would kill the worker outright, its registration
and its scheduler's locks left to expire. From registration on, such a signal is the warm stop
it is later: the loop's first round ends the worker, which stops its scheduler and deregisters.
"""

from __future__ import annotations

import signal

from rq import worker_registration
from rq.exceptions import StopRequested
from rq.utils import now

from offload import redis_hygiene
from offload.worker.base import WorkerBase


class RegistrationUpkeep(WorkerBase):
    """Worker mixin: registers the worker again when Redis lost its registration; a stop signal
    right after registering is a warm stop."""

    def bootstrap(self, *args, **kwargs) -> None:
        super().bootstrap(*args, **kwargs)  # RQ's: registers the worker
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop_before_loop)  # until RQ's loop installs its own

    def _stop_before_loop(self, signum, frame) -> None:
        try:
            self.request_stop(signum, frame)  # RQ's warm stop, passed on to the other slots
        except StopRequested:
            # Raised to end RQ's loop, which has not begun: its first round ends it instead.
            self._stop_requested = True

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        self._until_redis_answers("checking its registration", self._keep_registered)

    def _keep_registered(self) -> None:
        if self.birth_date is None:  # not registered yet (work() registers it): nothing to keep
            return
        with self.connection.pipeline(transaction=False) as pipeline:
            pipeline.exists(self.key)
            pipeline.sismember(worker_registration.REDIS_WORKER_KEYS, self.key)
            present, listed = pipeline.execute()
        watch = redis_hygiene.get_watch(self.flask_app)
        if present and listed:
            watch.check_if_due()
            return
        self.log.error(
            "Worker %s: its registration in Redis is gone (Redis restarted without persistence, or evicted "
            "keys): registering again",
            self.name,
        )
        self.last_heartbeat = now()
        with self.connection.pipeline() as pipeline:
            pipeline.hset(self.key, mapping={**self.serialize(), "state": self._state})
            worker_registration.register(self, pipeline)
            pipeline.expire(self.key, self.worker_ttl + 60)
            pipeline.execute()
        watch.check()  # now, not on schedule: says whether Redis lost its data, and counts it
