"""Is an rq worker alive on this host? For container health checks and operators.

    python -m offload.liveness

Exits 0 and names the worker(s) when one on this host is registered in Redis with a live
heartbeat (RQ drops a worker's key when its heartbeats stop) and its process exists; 1 when
none is; 2 when Redis cannot be reached. docker-compose.yml runs it as the worker's health
check; on Fly: ``fly ssh console --process-group worker -C "python -m offload.liveness"``, and
``offload_workers_alive`` on /metrics counts workers across Machines.
"""

from __future__ import annotations

import os
import socket
import sys
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import RedisError
from rq import Worker
from rq.serializers import JSONSerializer
from rq.worker.base import BaseWorker

from offload import settings
from offload.connection import connect


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_workers(redis: Redis, hostname: str) -> list[BaseWorker]:
    """The workers registered from ``hostname`` whose heartbeat has not expired and whose process exists."""
    return [
        worker
        for worker in Worker.all(connection=redis, serializer=JSONSerializer)
        if worker.hostname == hostname and worker.pid and _process_exists(worker.pid)
    ]


def main() -> int:
    hostname = socket.gethostname()
    try:
        config = settings.from_environ()
        settings.apply_defaults(config)
        workers = live_workers(connect(config), hostname)
    except RedisError as exc:
        print(f"liveness: cannot reach Redis: {exc}", file=sys.stderr)
        return 2
    if not workers:
        print(f"liveness: no live rq worker on {hostname}", file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    for worker in workers:
        beat = worker.last_heartbeat
        age = f"{(now - beat.replace(tzinfo=UTC)).total_seconds():.0f} s ago" if beat else "never"
        print(f"alive: {worker.name} pid {worker.pid}, {worker.get_state()}, last heartbeat {age}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
