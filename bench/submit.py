"""Submit path: ``POST /api/jobs`` against a no-op endpoint of the same app.

One gunicorn with the production settings (gunicorn.conf.py: 2 processes x 4 threads,
access log on), running the production app plus the benchmark-only ``POST /bench/noop``
(bench/webapp.py). The load generator keeps 16 connections busy on one endpoint, then the
other, in windows of ``WINDOW_SECONDS`` alternating until each endpoint has had
``load_seconds``; that is one repetition. On a shared machine the speed of both drifts by
2x within seconds; short alternating windows give both the same drift. No worker runs:
jobs only pile up. What each submit costs Redis (CPU, round trips) comes from the server's
counters over the submit windows, per answered request: the figure docs/capacity.md builds on.
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


WINDOW_SECONDS = 2.0
"""Length of one window on one endpoint (after a short warm-up that is not counted)."""

ENDPOINTS = {"noop": "/bench/noop", "submit": "/api/jobs"}


def run(options: Options) -> list[Row]:
    runs: dict[str, list[LoadResult]] = {"submit": [], "noop": []}
    costs: list[stack.RedisCost] = []
    windows = max(1, round(options.load_seconds / WINDOW_SECONDS))
    with stack.stack() as processes:
        base_url = processes.start_web()
        for repetition in range(options.repeat):
            seconds = options.load_seconds / windows
            progress(
                f"submit: {' and '.join(ENDPOINTS.values())} in turn, {options.concurrency} connections,"
                f" {windows} x {seconds:.1f} s each (repetition {repetition + 1} of {options.repeat})"
            )
            totals = {name: LoadResult(seconds=0) for name in ENDPOINTS}
            cost = stack.RedisCost(0, 0, 0.0)
            for _ in range(windows):
                for name, path in ENDPOINTS.items():
                    before = stack.redis_cost(processes.redis)
                    window = run_load(base_url + path, BODY, options.concurrency, seconds, 0.3)
                    if name == "submit":  # warm-up requests included: they cost Redis the same
                        cost = cost + (stack.redis_cost(processes.redis) - before)
                        submits = int(processes.redis.llen("rq:queue:default"))
                    totals[name].add(_checked(window, 202, path))
            for name in ENDPOINTS:
                runs[name].append(totals[name])
            costs.append(cost.per(submits))
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
        Row("submit", "Redis round trips per submit", median([cost.round_trips for cost in costs]), digits=2),
        Row("submit", "Redis CPU µs per submit", median([cost.cpu_seconds for cost in costs]) * 1e6, digits=0),
    ]
