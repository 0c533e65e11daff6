"""The Celery baseline's app: the same no-op job, Redis broker and Redis result backend.

Runs only inside the bench's own virtualenv for Celery (bench/celery_baseline.py makes it);
the app's requirements never include Celery. ``python -m bench.celery_app enqueue N`` queues
N no-op tasks and prints the last one's id; ``celery -A bench.celery_app worker --pool=solo``
runs them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from celery import Celery
from celery.signals import worker_ready

app = Celery("bench", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
app.conf.update(
    task_serializer="json",  # as Offload's jobs (JSON, never pickle)
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,  # kept an hour, as the RQ jobs of the drain scenario
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop() -> None:
    """Do nothing: what is left to measure is the queue's own cost."""


@worker_ready.connect
def _say_ready(**_: object) -> None:
    # A file, not a Redis key: the bench counts every command the worker sends.
    marker = os.environ.get("BENCH_CELERY_READY_FILE")
    if marker:
        Path(marker).touch()


def enqueue(count: int) -> str:
    """Queue ``count`` no-op tasks through Celery's own publishing path; return the last one's id."""
    last = ""
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            last = noop.apply_async(producer=producer).id
    return last


if __name__ == "__main__":
    if sys.argv[1:2] != ["enqueue"] or len(sys.argv) != 3:
        sys.exit("usage: python -m bench.celery_app enqueue COUNT")
    print(enqueue(int(sys.argv[2])))
