"""Offload's worker: ``rq worker -w offload.worker.OffloadWorker`` or ``flask offload worker``."""

from offload.worker.worker import OffloadJob, OffloadWorker

__all__ = ["OffloadJob", "OffloadWorker"]
