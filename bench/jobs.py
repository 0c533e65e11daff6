"""Job functions only the benchmarks enqueue; workers import them as ``bench.jobs.<name>``."""

from __future__ import annotations

import os
import signal
import time
from email.message import EmailMessage


def noop() -> None:
    """Do nothing: what is left to measure is the queue's own cost."""


def crash() -> None:
    """Die the way a buggy C extension does: a segmentation fault."""
    os.kill(os.getpid(), signal.SIGSEGV)


def spin(milliseconds: float) -> None:
    """Keep a core busy for ``milliseconds`` of CPU time: a CPU-bound task (report, inference)."""
    until = time.process_time() + milliseconds / 1000
    while time.process_time() < until:
        pass


def wait(milliseconds: float) -> None:
    """Wait ``milliseconds`` without using the CPU: an I/O-bound task (``call_api`` on a slow API)."""
    time.sleep(milliseconds / 1000)


def mail(smtp_url: str, to: str) -> str:
    """Send one mail through Offload's mailer, as a newsletter's job does (connection reused)."""
    from offload.workloads.mailer import SmtpConfig, send

    message = EmailMessage()
    message["From"] = "bench@example.org"
    message["To"] = to
    message["Subject"] = "Bench"
    message.set_content("Hello")
    return send(SmtpConfig.from_url(smtp_url), message, lambda _: None)


def fetch(url: str) -> int:
    """Wait on an HTTP server (an I/O-bound task, like call_api): return the status it answered.

    Plain urllib: a new httpx client per call would spend more CPU on its TLS context than the
    job spends on anything else."""
    from urllib.request import urlopen

    with urlopen(url, timeout=30) as response:
        return response.status
