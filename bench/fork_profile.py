"""Where a forked job's time goes in RQ's stock ``Worker``: ``python -m bench.fork_profile``.

Runs N no-op jobs through ``rq.Worker`` in this process (burst mode, JSON, one queue), on a
Redis server of its own, after importing the app so the process has a worker's size.
Each phase of each job is timed: the parent's preparation, ``os.fork()``, the child being
scheduled, the child's ``perform_job`` (profiled with cProfile), its exit until the
parent reaps it. Prints the median of each phase, the kernel's share (CPU time, page
faults), and the functions the children spent their time in.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from redis import Redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

import dev

JOBS = 200


class TimedWorker(Worker):
    """RQ's Worker, recording when each phase of each job starts and ends."""

    records: Path

    def execute_job(self, job, queue):  # type: ignore[no-untyped-def]
        self._times = {"dequeued": time.perf_counter()}
        super().execute_job(job, queue)
        self._times["idle"] = time.perf_counter()
        with open(self.records / "parent.jsonl", "a") as out:
            out.write(json.dumps(self._times) + "\n")

    def prepare_execution(self, job):  # type: ignore[no-untyped-def]
        execution = super().prepare_execution(job)
        self._times["prepared"] = time.perf_counter()
        return execution

    def fork_work_horse(self, job, queue):  # type: ignore[no-untyped-def]
        self._times["fork"] = time.perf_counter()
        super().fork_work_horse(job, queue)
        self._times["forked"] = time.perf_counter()

    def wait_for_horse(self):  # type: ignore[no-untyped-def]
        result = super().wait_for_horse()
        self._times["reaped"] = time.perf_counter()
        return result

    def main_work_horse(self, job, queue):  # type: ignore[no-untyped-def]
        times = {"child": time.perf_counter()}
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        profile = cProfile.Profile()
        perform = self.perform_job

        def profiled(job, queue, execution):  # type: ignore[no-untyped-def]
            times["perform"] = time.perf_counter()
            profile.enable()
            result = perform(job, queue, execution)
            profile.disable()
            times["performed"] = time.perf_counter()
            times["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            profile.dump_stats(self.records / f"child-{os.getpid()}.prof")
            with open(self.records / "child.jsonl", "a") as out:
                out.write(json.dumps(times) + "\n")
            return result

        self.perform_job = profiled  # type: ignore[method-assign]
        super().main_work_horse(job, queue)


def main() -> None:
    port = dev.free_port()
    with dev.redis_server(dev.find_redis_server(), port), tempfile.TemporaryDirectory() as scratch:
        url = f"redis://127.0.0.1:{port}/0"
        os.environ.update(REDIS_URL=url)
        import app  # noqa: F401 - Flask, pydantic and the tasks: a worker's memory

        redis = Redis.from_url(url)
        queue = Queue("default", connection=redis, serializer=JSONSerializer)
        queue.enqueue_many([Queue.prepare_data("bench.jobs.noop", result_ttl=600) for _ in range(JOBS)])
        worker = TimedWorker(["default"], connection=redis, serializer=JSONSerializer)
        worker.records = Path(scratch)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        worker.work(burst=True, logging_level="WARNING")
        elapsed = time.perf_counter() - started
        children = resource.getrusage(resource.RUSAGE_CHILDREN)

        parent = [json.loads(line) for line in (worker.records / "parent.jsonl").read_text().splitlines()]
        child = [json.loads(line) for line in (worker.records / "child.jsonl").read_text().splitlines()]

        def ms(values: list[float]) -> str:
            return f"{statistics.median(values) * 1000:6.2f} ms"

        print(f"{JOBS} no-op jobs through rq.Worker (forking) in {elapsed:.2f} s: {elapsed / JOBS * 1000:.1f} ms/job")
        phases = [
            ("parent: dequeued -> execution prepared", [p["prepared"] - p["dequeued"] for p in parent]),
            ("parent: os.fork()", [p["forked"] - p["fork"] for p in parent]),
            ("child scheduled after fork", [c["child"] - p["fork"] for p, c in zip(parent, child, strict=True)]),
            ("child: signals, seed -> perform_job", [c["perform"] - c["child"] for c in child]),
            ("child: perform_job", [c["performed"] - c["perform"] for c in child]),
            (
                "child exits, parent reaps it",
                [p["reaped"] - c["performed"] for p, c in zip(parent, child, strict=True)],
            ),
            ("parent: reaped -> idle", [p["idle"] - p["reaped"] for p in parent]),
            ("whole job, dequeued -> idle", [p["idle"] - p["dequeued"] for p in parent]),
        ]
        for label, values in phases:
            print(f"  {label:40s} {ms(values)}")
        user = (children.ru_utime - children_before.ru_utime) / JOBS * 1000
        system = (children.ru_stime - children_before.ru_stime) / JOBS * 1000
        print(
            f"  children's CPU per job: user {user:.2f} ms, kernel {system:.2f} ms; "
            f"{statistics.median(c['faults'] for c in child):.0f} page faults in perform_job"
        )
        profiles = sorted(worker.records.glob("child-*.prof"))
        stats = pstats.Stats(str(profiles[0]), stream=sys.stdout)
        for path in profiles[1:]:
            stats.add(str(path))
        stats.files = []  # one header, not one per job
        print(f"\nperform_job in the children, cProfile over {len(profiles)} jobs:")
        stats.sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
