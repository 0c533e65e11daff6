"""Latency: one no-op job at a time to an idle worker, submit -> started and submit -> finished.

Three idle workers run side by side, each on its own Redis server: Offload's, stock
SimpleWorker and stock forking ``rq worker``. Jobs go to each in turn (shuffled), one at a
time, with a pause between so every worker is back waiting in BLPOP. "Submitted" is the
client's clock just before the enqueue; "started" is the job's own ``started_at``;
"finished" is when the client sees the result (a blocking XREAD on the job's result
stream), as a caller waiting for it would.
"""

from __future__ import annotations

import random
import time
from contextlib import ExitStack
from datetime import UTC, datetime

from bench import stack
from bench.options import Options, progress
from bench.report import Row, at_most, median, percentile

WORKERS = {
    "offload": stack.PRODUCTION_WORKER,
    "simple": stack.STOCK_SIMPLE_WORKER,
    "forking": stack.STOCK_FORKING_WORKER,
}


def run(options: Options) -> list[Row]:
    started: dict[str, list[float]] = {kind: [] for kind in WORKERS}
    finished: dict[str, list[float]] = {kind: [] for kind in WORKERS}
    samples = options.latency_samples * options.repeat
    with ExitStack() as exits:
        queues = {}
        for kind, command in WORKERS.items():
            processes = exits.enter_context(stack.stack())
            processes.start_worker(command, name=kind)
            queues[kind] = stack.queue(processes.redis)
        progress(f"latency: {samples} jobs one at a time to each of {len(WORKERS)} idle workers")
        for queue in queues.values():  # a first job each, so no fork or import is counted
            queue.enqueue(stack.NOOP).latest_result(timeout=30)
        for _ in range(samples):
            order = list(WORKERS)
            random.shuffle(order)
            for kind in order:
                time.sleep(random.uniform(0.05, 0.15))  # idle: the worker is back in BLPOP
                submitted = time.time()
                job = queues[kind].enqueue(stack.NOOP, result_ttl=600)
                if job.latest_result(timeout=30) is None:
                    raise RuntimeError(f"latency: {kind} did not finish a job in 30 s")
                finished[kind].append(time.time() - submitted)
                job.refresh()
                assert job.started_at is not None
                started[kind].append(_utc(job.started_at) - submitted)

    def ms(values: list[float], fraction: float) -> float:
        return (median(values) if fraction == 0.5 else percentile(values, fraction)) * 1000

    rows = []
    baselines = (("simple", "rq worker SimpleWorker"), ("forking", "rq worker (forking)"))
    for label, values in (("submit -> started", started), ("submit -> finished", finished)):
        for fraction, name in ((0.5, "median"), (0.9, "p90")):
            for baseline, described in baselines:
                # The target is against SimpleWorker, end to end; the rest is shown beside it.
                target = baseline == "simple" and label.endswith("finished")
                rows.append(
                    Row(
                        "latency",
                        f"{label}, {name} ms",
                        ms(values["offload"], fraction),
                        ms(values[baseline], fraction),
                        described,
                        "<= 1.5x" if target else "",
                        at_most(1.5) if target else None,
                        digits=2,
                    )
                )
    return rows


def _utc(moment: datetime) -> float:
    return moment.replace(tzinfo=UTC).timestamp()
