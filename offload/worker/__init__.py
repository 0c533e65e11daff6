"""Offload's worker: ``rq worker -w offload.worker.OffloadWorker`` or ``flask offload worker``.

One concern per module (see worker.py); every RQ method Offload overrides is listed in
overrides.py, private ones marked.
"""

from offload.worker.overrides import RQ_OVERRIDES
from offload.worker.worker import OffloadJob, OffloadWorker

__all__ = ["RQ_OVERRIDES", "OffloadJob", "OffloadWorker"]
