"""The worker's split, kept honest: every RQ method Offload overrides is in overrides.RQ_OVERRIDES,
each worker module holds one concern and imports flow one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from rq import Queue, Worker
from rq.job import Job
from rq.scheduler import RQScheduler

from offload.queues import OffloadQueue
from offload.worker import RQ_OVERRIDES, OffloadJob, OffloadWorker
from offload.worker.scheduler import SleepingScheduler

PAIRS = {
    "rq.Worker": (OffloadWorker, Worker),
    "rq.job.Job": (OffloadJob, Job),
    "rq.Queue": (OffloadQueue, Queue),
    "rq.scheduler.RQScheduler": (SleepingScheduler, RQScheduler),
}
NOT_METHODS = {"__doc__", "__module__", "__dict__", "__weakref__", "__annotations__", "__qualname__", "__orig_bases__"}
WORKER_DIR = Path(__file__).resolve().parent.parent / "offload" / "worker"


def overridden() -> set[tuple[str, str, str]]:
    found = set()
    for rq_class, (ours, _theirs) in PAIRS.items():
        for cls in ours.__mro__:
            if cls.__module__.startswith("offload"):
                found |= {(rq_class, name, cls.__module__) for name in vars(cls) if name not in NOT_METHODS}
    return {(rq_class, name, module) for rq_class, name, module in found if hasattr(PAIRS[rq_class][1], name)}


def test_every_rq_method_offload_overrides_is_listed_once_with_private_ones_marked():
    listed = [(o.rq_class, o.method, o.module) for o in RQ_OVERRIDES]

    assert len(listed) == len(set(listed))
    assert set(listed) == overridden()
    for override in RQ_OVERRIDES:
        assert override.private == (override.method.startswith("_") and not override.method.endswith("__"))
    private = sorted(f"{o.rq_class}.{o.method}" for o in RQ_OVERRIDES if o.private)
    assert private == ["rq.Queue._persist_job", "rq.Worker._pubsub_exception_handler", "rq.Worker._start_scheduler"]


@pytest.mark.parametrize("path", sorted(WORKER_DIR.glob("*.py")), ids=lambda path: path.name)
def test_worker_modules_stay_small_and_import_only_lower_modules(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):  # function-local imports included
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}

    assert len(path.read_text().splitlines()) <= 300
    forbidden = [name for name in imported if name.startswith(("offload.web", "offload.cli", "offload.extension"))]
    assert not forbidden
