"""Job functions only the benchmarks enqueue; workers import them as ``bench.jobs.<name>``."""

from __future__ import annotations

import os
import signal


def noop() -> None:
    """Do nothing: what is left to measure is the queue's own cost."""


def crash() -> None:
    """Die the way a buggy C extension does: a segmentation fault."""
    os.kill(os.getpid(), signal.SIGSEGV)


def fetch(url: str) -> int:
    """Wait on an HTTP server (an I/O-bound task, like call_api): return the status it answered.

    Plain urllib: a new httpx client per call would spend more CPU on its TLS context than the
    job spends on anything else."""
    from urllib.request import urlopen

    with urlopen(url, timeout=30) as response:
        return response.status
