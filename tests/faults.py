"""What every fault scenario shares: jobs that keep a ledger of their runs, and the tally.

A scenario submits jobs with :meth:`Ledger.submit` (``tests.fixtures.record_run`` counts
each start and each completion per job in Redis), does its damage (kill, restart, cut the
network, make a dependency flaky), waits for :meth:`Ledger.settled`, then checks and records
:meth:`Ledger.tally`: every job finished exactly once or failed with a reason, none lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

import dev
from offload.jobs import short_error


@dataclass(frozen=True)
class Running:
    """A job in progress, as its work horse described itself."""

    job_id: str
    pid: int
    worker_pid: int
    since: float


class Ledger:
    """Jobs submitted under one name, and what became of each."""

    def __init__(self, redis: Redis, name: str) -> None:
        self.redis = redis
        self.name = name
        self.job_ids: list[str] = []

    def submit(self, count: int, seconds: float = 0.0, queue: str = "default", **options: Any) -> list[str]:
        """Enqueue ``count`` jobs that each work ``seconds``, in one pipeline; return their ids."""
        target = Queue(queue, connection=self.redis, serializer=JSONSerializer)
        data = [Queue.prepare_data("tests.fixtures.record_run", (self.name, seconds), **options) for _ in range(count)]
        jobs = []
        for start in range(0, count, 1000):  # bounded pipelines
            jobs += target.enqueue_many(data[start : start + 1000])
        ids = [job.id for job in jobs]
        self.job_ids += ids
        return ids

    def _counts(self, kind: str) -> dict[str, int]:
        """Runs or completions per job id (fixtures.record_run writes one field per run)."""
        return dict(Counter(key.decode().partition("/")[0] for key in self.redis.hkeys(f"{self.name}:{kind}")))

    def runs(self) -> dict[str, int]:
        return self._counts("runs")

    def done(self) -> dict[str, int]:
        return self._counts("done")

    def in_progress(self, younger_than: float, exclude: set[str] = frozenset()) -> Running | None:
        """Return a job started less than ``younger_than`` s ago that has not completed, if any."""
        done = self.done()
        for key, value in self.redis.hgetall(f"{self.name}:running").items():
            job_id, info = key.decode(), json.loads(value)
            if job_id in exclude or done.get(job_id):
                continue
            if time.time() - info["since"] < younger_than and alive(info["pid"]):
                return Running(job_id, info["pid"], info["worker_pid"], info["since"])
        return None

    def statuses(self) -> dict[str, str]:
        """Each submitted job's status; "missing" for a job whose hash is gone."""
        found: dict[str, str] = {}
        for start in range(0, len(self.job_ids), 500):
            ids = self.job_ids[start : start + 500]
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.hget(f"rq:job:{job_id}", "status")
            for job_id, status in zip(ids, pipe.execute(), strict=True):
                found[job_id] = status.decode() if status else "missing"
        return found

    def settled(self) -> bool:
        """True once every job has ended (finished or failed)."""
        return all(status in ("finished", "failed") for status in self.statuses().values())

    def fetch(self, job_id: str) -> Job:
        return Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)

    def tally(self) -> dict[str, Any]:
        """Count what became of the jobs: finished once, failed with a reason, or lost."""
        statuses, runs, done = self.statuses(), self.runs(), self.done()
        finished = [job_id for job_id, status in statuses.items() if status == "finished"]
        failed = [job_id for job_id, status in statuses.items() if status == "failed"]
        unexplained = [job_id for job_id in failed if not short_error(self.fetch(job_id))]
        return {
            "submitted": len(self.job_ids),
            "finished": len(finished),
            "failed": len(failed),
            "failed_without_reason": len(unexplained),
            "lost": len(self.job_ids) - len(finished) - len(failed),
            "finished_not_exactly_once": sum(1 for job_id in finished if done.get(job_id) != 1),
            "completed_twice": sum(1 for count in done.values() if count > 1),
            "reruns": sum(runs.values()) - len(runs),
        }

    def forget(self) -> None:
        """Delete the ledger's own keys."""
        self.redis.delete(*(f"{self.name}:{kind}" for kind in ("runs", "done", "running")))


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def parse_time(value: str) -> float:
    """Seconds since the epoch of an ISO time the worker recorded (``...Z``)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@contextmanager
def redis_with(*options: str, port: int | None = None, data_dir: Path | None = None) -> Iterator[RedisProcess]:
    """Run a real redis-server with ``options`` (``"--maxmemory-policy", "allkeys-lru"``) until the block ends.

    Persistence is off unless ``options`` turn it on (``--appendonly yes``); the process can be
    frozen (:meth:`RedisProcess.freeze`), or killed and started again on the same port.
    """
    server = RedisProcess(port or dev.free_port(), list(options), data_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


class RedisProcess:
    """One redis-server on 127.0.0.1 with its own options, for the tests that break it."""

    def __init__(self, port: int, options: list[str], data_dir: Path | None) -> None:
        self.port = port
        self.options = options
        self._scratch = tempfile.TemporaryDirectory(prefix="offload-redis-")
        self.data_dir = data_dir or Path(self._scratch.name)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [dev.find_redis_server("redis"), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.data_dir), "--save", "", "--appendonly", "no", "--loglevel", "warning"]
        self.process = subprocess.Popen([*args, *self.options], stdout=subprocess.DEVNULL, start_new_session=True)
        dev.wait_until_serving(self.process, self.url)

    def freeze(self) -> None:
        """SIGSTOP: connections are still accepted (the kernel's backlog), nothing is answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def shut_down(self) -> None:
        """SIGTERM, as ``redis-cli shutdown`` or a host's restart: the AOF (if on) is flushed first."""
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL, as a lost machine: nothing is flushed."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._scratch.cleanup()
