"""Idle cost: Redis commands per hour of one web process and two idle workers, as deployed.

Two deployments side by side, each on its own Redis server: Offload's (``gunicorn app:app``
and two ``rq worker -c worker -w worker.OffloadWorker --with-scheduler``) and the same web
with two stock ``rq worker --with-scheduler``. Nothing is submitted. Commands are counted
(INFO commandstats) over a window that starts once every process has started and lasts a
full maintenance period (600 s), so the rare periodic work (registry cleaning, BLPOP
timeouts) is in it too; the count is scaled to an hour.

The window runs while the other scenarios run: idle processes only sleep, so the others
do not change what they send, and the benchmark takes minutes instead of tens.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from bench import stack
from bench.options import Options, progress
from bench.report import Row, at_most

DEPLOYMENTS = {
    "offload": stack.PRODUCTION_WORKER,
    "stock": stack.STOCK_SCHEDULER_WORKER,
}


@dataclass
class IdleCost:
    """Filled in when the window closes: commands per hour by deployment, and by command."""

    per_hour: dict[str, float] = field(default_factory=dict)
    by_command: dict[str, Counter[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def rows(self) -> list[Row]:
        return [
            Row(
                "idle",
                f"Redis commands/hour, web + 2 idle workers ({self.seconds:.0f} s window)",
                self.per_hour["offload"],
                self.per_hour["stock"],
                "2x rq worker --with-scheduler",
                "<= 0.1x",
                at_most(0.1),
                digits=0,
            )
        ]

    def details(self) -> str:
        lines = []
        for name, counts in self.by_command.items():
            scale = 3600 / self.seconds
            top = ", ".join(f"{command} {calls * scale:,.0f}" for command, calls in counts.most_common(8))
            lines.append(f"idle, {name}, per hour: {top}")
        return "\n".join(lines)


@contextmanager
def measuring(options: Options) -> Iterator[IdleCost]:
    """Start both deployments, count while the block runs (at least ``options.idle_seconds``)."""
    result = IdleCost()
    with ExitStack() as exits:
        deployments = {}
        for name, worker in DEPLOYMENTS.items():
            processes = exits.enter_context(stack.stack())
            processes.start_web(name=f"{name}-web")
            processes.start_worker(worker, name=f"{name}-worker-1")
            processes.start_worker(worker, name=f"{name}-worker-2")
            deployments[name] = processes
        time.sleep(5)  # let start-up (first maintenance pass, scheduler start) finish
        progress(f"idle: counting commands for {options.idle_seconds:.0f} s, while the other scenarios run")
        before = {name: stack.command_counts(processes.redis) for name, processes in deployments.items()}
        started = time.monotonic()
        yield result
        remaining = options.idle_seconds - (time.monotonic() - started)
        if remaining > 0:
            progress(f"idle: waiting {remaining:.0f} s more for the idle window to close")
            time.sleep(remaining)
        result.seconds = time.monotonic() - started
        for name, processes in deployments.items():
            counts = stack.command_counts(processes.redis) - before[name]
            counts["info"] -= 1  # our own INFO commandstats
            result.by_command[name] = +counts
            result.per_hour[name] = counts.total() * 3600 / result.seconds
            for number in (1, 2):
                processes.check_alive(processes.processes[number], f"{name}-worker-{number}")
