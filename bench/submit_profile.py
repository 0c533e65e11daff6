"""Where the submit path's CPU goes, in process: ``python -m bench.submit_profile``.

The production app plus the bench endpoints (bench/webapp.py) through Flask's test client on a
Redis server of its own, without cookies (as the submit bench's load generator sends them): CPU
time (``time.process_time``) per request of ``POST /bench/noop`` and ``POST /api/jobs``, then of
``POST /api/jobs`` with what a submit carries switched off one after another: the per-client
submit limit (Flask-Limiter), the quotas' script, remembering the job in the signed session
cookie (My jobs), and the enqueue itself (``jobs.submit_job`` answered by a job made
beforehand). What is left at the end is the floor of any submit through this view: reading and
validating the body and answering with the job. Best of 3 runs each: the machine is shared, and
the least disturbed run is the cost.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
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
        from offload.web import mine, quotas
        from offload.web.rate_limits import limiter

        app = create_bench_app()
        client = app.test_client(use_cookies=False)

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
        with app.test_request_context():
            task = get_task("crunch_numbers")
            assert task is not None
            made = jobs.submit_job(task, task.params.model_validate(BODY["params"]))
        # Each step keeps the ones before it switched off.
        steps: dict[str, Callable[[], None]] = {
            "the submit limit off": lambda: setattr(limiter, "enabled", False),
            "... and the quotas' script": lambda: setattr(quotas, "charge", lambda task, params: str(uuid.uuid4())),
            "... and the My jobs cookie": lambda: setattr(mine, "remember_job", lambda job_id: None),
            "... and the enqueue (the floor)": lambda: setattr(jobs, "submit_job", lambda *args, **kwargs: made),
        }
        saved = (limiter.enabled, quotas.charge, mine.remember_job, jobs.submit_job)
        try:
            for name, switch_off in steps.items():
                switch_off()
                figures[f"POST /api/jobs, {name}"] = cpu_per_request(post("/api/jobs"))
            figures["POST /bench/noop, the submit limit off"] = cpu_per_request(post("/bench/noop"))
        finally:
            limiter.enabled, quotas.charge, mine.remember_job, jobs.submit_job = saved
        with app.app_context():
            ping = jobs.get_redis().ping
            figures["a bare PING through redis-py"] = cpu_per_request(ping, 5000)
    width = max(len(name) for name in figures)
    for name, micros in figures.items():
        print(f"{name.ljust(width)}  {micros:8.0f} µs CPU")
    noop, floor = figures["POST /bench/noop"], figures["POST /api/jobs, ... and the enqueue (the floor)"]
    budget = noop / 0.7 - floor
    print(f"the no-op over the floor: {noop / floor:.2f}x; a 0.7x submit leaves {budget:.0f} µs over the floor for")
    print("the limit, the quotas, the cookie and the enqueue together (before gunicorn's own cost per request)")


if __name__ == "__main__":
    main()
