"""Submit path: ``POST /api/jobs`` against a no-op endpoint of the same app.

One gunicorn with the production settings (gunicorn.conf.py: 2 processes x 4 threads,
access log on), running the production app plus the benchmark-only ``POST /bench/noop``
(bench/webapp.py). The load generator keeps 16 connections busy for a fixed time on one
endpoint, then the other, alternating, repeated. No worker runs: jobs only pile up.
"""

from __future__ import annotations

from bench import stack
from bench.load import LoadResult, run_load
from bench.options import Options, progress
from bench.report import Row, at_least, at_most, median

BODY = {"task": "crunch_numbers", "params": {"limit": 1000}}


def _checked(result: LoadResult, expected: int, what: str) -> LoadResult:
    wrong = {status: count for status, count in result.statuses.items() if status != expected}
    if wrong or not result.latencies:
        raise RuntimeError(f"{what}: expected only {expected} answers, got {result.statuses}")
    return result


def run(options: Options) -> list[Row]:
    runs: dict[str, list[LoadResult]] = {"submit": [], "noop": []}
    with stack.stack() as processes:
        base_url = processes.start_web()
        for repetition in range(options.repeat):
            for name, path in (("noop", "/bench/noop"), ("submit", "/api/jobs")):
                progress(
                    f"submit: {path}, {options.concurrency} connections, {options.load_seconds:.0f} s "
                    f"(repetition {repetition + 1}/{options.repeat})"
                )
                result = run_load(base_url + path, BODY, options.concurrency, options.load_seconds)
                runs[name].append(_checked(result, 202, path))
            processes.redis.flushdb()

    def figure(name: str, measure) -> float:  # type: ignore[no-untyped-def]
        return median([measure(result) for result in runs[name]])

    def rate(result: LoadResult) -> float:
        return result.requests_per_second

    def p50(result: LoadResult) -> float:
        return result.percentile(0.50) * 1000

    def p99(result: LoadResult) -> float:
        return result.percentile(0.99) * 1000

    noop = "POST /bench/noop"
    return [
        Row(
            "submit",
            "requests/s, POST /api/jobs",
            figure("submit", rate),
            figure("noop", rate),
            noop,
            ">= 0.7x",
            at_least(0.7),
        ),
        Row("submit", "p50 ms", figure("submit", p50), figure("noop", p50), noop),
        Row("submit", "p99 ms", figure("submit", p99), figure("noop", p99), noop, "<= 2x", at_most(2.0)),
    ]
