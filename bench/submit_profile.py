"""Where the submit path's CPU goes, in process: ``python -m bench.submit_profile``.

The production app plus the bench endpoints (bench/webapp.py) through Flask's test client on a
Redis server of its own: CPU time (``time.process_time``) per request of ``POST /bench/noop`` and
``POST /api/jobs``, then of ``POST /api/jobs`` with ``jobs.submit_job`` answered by a job made
beforehand (what the enqueue costs) and with the rate limiter off (what the submit limit
costs). Best of 3 runs each: the machine is shared, and the least disturbed run is the cost.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable

import dev
from bench.stack import ONE_CLIENT_LIMITS

BODY = {"task": "crunch_numbers", "params": {"limit": 1000}}
REQUESTS = 1500


def cpu_per_request(post: Callable[[], object], count: int = REQUESTS) -> float:
    """Best of 3: CPU µs per call of ``post``."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(count):
            post()
        best = min(best, (time.process_time() - started) / count)
    return best * 1e6


def main() -> None:
    port = dev.free_port()
    with dev.redis_server(dev.find_redis_server(), port):
        os.environ.update(
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            OFFLOAD_ENV="production",
            SECRET_KEY=secrets.token_hex(32),
            UNREGISTERED_JOB_MODULES="bench.jobs",
            **ONE_CLIENT_LIMITS,
        )
        from bench.webapp import create_bench_app
        from offload import jobs
        from offload.state import get_task
        from offload.web.rate_limits import limiter

        app = create_bench_app()
        client = app.test_client()

        def post(path: str) -> Callable[[], object]:
            def send() -> object:
                response = client.post(path, json=BODY)
                assert response.status_code == 202, response.data
                return response

            return send

        figures = {
            "POST /bench/noop": cpu_per_request(post("/bench/noop")),
            "POST /api/jobs": cpu_per_request(post("/api/jobs")),
        }
        submit_job = jobs.submit_job
        with app.test_request_context():
            task = get_task("crunch_numbers")
            assert task is not None
            made = submit_job(task, task.params.model_validate(BODY["params"]))
        jobs.submit_job = lambda *args, **kwargs: made  # type: ignore[assignment]
        try:
            figures["POST /api/jobs, submit_job answered from memory"] = cpu_per_request(post("/api/jobs"))
        finally:
            jobs.submit_job = submit_job
        limiter.enabled = False
        figures["POST /api/jobs, rate limiter off"] = cpu_per_request(post("/api/jobs"))
        figures["POST /bench/noop, rate limiter off"] = cpu_per_request(post("/bench/noop"))
        with app.app_context():
            ping = jobs.get_redis().ping
            figures["a bare PING through redis-py"] = cpu_per_request(ping, 5000)
    width = max(len(name) for name in figures)
    for name, micros in figures.items():
        print(f"{name.ljust(width)}  {micros:8.0f} µs CPU")


if __name__ == "__main__":
    main()
