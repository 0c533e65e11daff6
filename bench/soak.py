"""Soak: does a web process's memory grow under hours of mixed traffic? (``--only soak``, opt-in)

One gunicorn web process (``gunicorn app:app``, production settings, gevent) with recycling
turned off (``GUNICORN_MAX_REQUESTS=0``), one production worker, a local flaky API for
``call_api``, and a paced mix of what users do: about 40% of requests submit a job (numbers,
the API call, the language model, a PDF report: ~10 jobs/s at the default 25 requests/s), the
rest read pages, job pages and the JSON API, and an operator polls the console. Every
``SAMPLE_SECONDS`` the web process's RSS, the requests it has served and Redis's memory are
written to a CSV. After a warm-up of ``WARMUP_REQUESTS`` the table shows the RSS, the growth
per hour fitted over the second half of the run (a leak keeps rising there; a heap settling
into its size does not), and what was lost: any answer other than the expected one.

It answers issue 14's question (is 55.9 -> 64.7 MiB over 22,000 requests a leak?); gunicorn
recycles web processes with jitter either way (gunicorn.conf.py ``max_requests``).
"""

from __future__ import annotations

import csv
import itertools
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

import dev
from bench import stack
from bench.options import Options, progress
from bench.report import Row

MIB = 1024 * 1024
SAMPLE_SECONDS = 15.0
WARMUP_REQUESTS = 2_000
CLIENTS = 4
"""Threads sending requests, each its own browser (cookies: the jobs it submitted)."""

OPERATOR_PAGES = ["/operator/queues", "/operator/dashboard.json", "/operator/jobs", "/operator/dashboard"]
WORDS = [
    "der",
    "schnelle",
    "braune",
    "Fuchs",
    "the",
    "quick",
    "brown",
    "fox",
    "le",
    "renard",
    "brun",
    "rapide",
    "el",
    "zorro",
    "marrón",
    "veloz",
]


@dataclass
class Tally:
    """What the load generator saw, shared by its threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    submitted: list[str] = field(default_factory=list)
    requests: int = 0

    def record(self, what: str, status: int, expected: int) -> None:
        with self.lock:
            self.requests += 1
            self.statuses[f"{what} {status}"] += 1
            if status != expected:
                self.unexpected[f"{what} {status}"] += 1


def _submission(rng: random.Random) -> dict[str, object]:
    """One job of the guide's workloads, with varied inputs (varied sizes are what fragment a heap)."""
    kind = rng.choices(["crunch", "api", "model", "report"], weights=[4, 3, 3, 1])[0]
    if kind == "crunch":
        return {"task": "crunch_numbers", "params": {"limit": rng.randint(1_000, 50_000)}}
    if kind == "api":
        return {"task": "call_api", "params": {"path": f"/get?q={rng.randint(0, 10**9)}"}}
    if kind == "model":
        text = " ".join(rng.choices(WORDS, k=rng.randint(3, 60)))
        return {"task": "run_model", "params": {"text": text, "top": rng.randint(1, 5)}}
    rows = "\n".join(f"Region {n},{rng.randint(0, 999)},{rng.randint(0, 999)}" for n in range(rng.randint(1, 40)))
    params = {"title": f"Soak {rng.randint(0, 10**6)}", "table": "Region,Q1,Q2\n" + rows}
    return {"task": "generate_report", "params": params}


def _browse(
    base_url: str,
    tally: Tally,
    until: float,
    pace: Callable[[], None],
    seed: int,
    operator: bool,
    processes: stack.Stack,
) -> None:
    rng = random.Random(seed)
    mine: list[str] = []
    with httpx.Client(base_url=base_url, timeout=30) as http:
        if operator:
            processes.log_in(http)
        while time.monotonic() < until:
            pace()
            roll = rng.random()
            try:
                if operator and roll < 0.3:
                    path = rng.choice(OPERATOR_PAGES)
                    tally.record(path, http.get(path).status_code, 200)
                elif roll < 0.4:
                    answer = http.post("/api/jobs", json=_submission(rng))
                    stack.carry_cookies(http, answer)
                    tally.record("POST /api/jobs", answer.status_code, 202)
                    if answer.status_code == 202:
                        job_id = answer.json()["id"]
                        mine = [*mine, job_id][-50:]
                        with tally.lock:
                            tally.submitted.append(job_id)
                elif roll < 0.55 and mine:
                    tally.record("GET /jobs/<id>", http.get(f"/jobs/{rng.choice(mine)}").status_code, 200)
                elif roll < 0.7 and mine:
                    tally.record("GET /api/jobs/<id>", http.get(f"/api/jobs/{rng.choice(mine)}").status_code, 200)
                elif roll < 0.8:
                    tally.record("GET /", http.get("/").status_code, 200)
                elif roll < 0.88:
                    tally.record("GET /jobs", http.get("/jobs").status_code, 200)
                elif roll < 0.95:
                    tally.record("GET /api/tasks", http.get("/api/tasks").status_code, 200)
                else:
                    tally.record("GET /healthz", http.get("/healthz").status_code, 200)
            except httpx.HTTPError as exc:
                tally.record(f"error {type(exc).__name__}", 0, 200)


def _pacer(rate: float) -> Callable[[], None]:
    """A function that, called by any thread, returns at the next slot of ``rate`` per second."""
    lock = threading.Lock()
    slots = itertools.count()
    start = time.monotonic()

    def pace() -> None:
        with lock:
            due = start + next(slots) / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    return pace


def _web_process(processes: stack.Stack) -> psutil.Process:
    assert processes.web is not None
    children = psutil.Process(processes.web.pid).children()
    if len(children) != 1:
        raise RuntimeError(f"expected one web process, found {len(children)}")
    return children[0]


def _slope(samples: list[dict[str, float]], key: str) -> float | None:
    """Least-squares growth of ``key`` per hour over ``samples`` (None with too few of them)."""
    if len(samples) < 3:
        return None
    return statistics.linear_regression([s["seconds"] for s in samples], [s[key] for s in samples]).slope * 3600


def run(options: Options) -> list[Row]:
    seconds = options.soak_minutes * 60
    progress(f"soak: {options.soak_minutes:.0f} min, {options.soak_rate:.0f} requests/s on one web process")
    with stack.stack() as processes:
        api_port = dev.free_port()
        processes.spawn("api", f"python dev.py flaky-api {api_port}")
        processes.env.update(
            THIRD_PARTY_URL=f"http://127.0.0.1:{api_port}",
            WEB_CONCURRENCY="1",
            GUNICORN_MAX_REQUESTS="0",  # no recycling: what one process does over the whole run
            GUNICORN_LOG_LEVEL="warning",
        )
        base_url = processes.start_web(app="app:app")
        worker = processes.start_worker(stack.PRODUCTION_WORKER)
        web = _web_process(processes)
        tally = Tally()
        until = time.monotonic() + seconds
        pace = _pacer(options.soak_rate)
        threads = [
            threading.Thread(
                target=_browse, args=(base_url, tally, until, pace, seed, seed == 0, processes), daemon=True
            )
            for seed in range(CLIENTS)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        samples: list[dict[str, float]] = []
        out = Path(options.soak_csv)
        with out.open("w", newline="") as file:
            writer = csv.DictWriter(file, ["seconds", "requests", "rss_mib", "uss_mib", "redis_used_mib", "jobs"])
            writer.writeheader()
            while any(thread.is_alive() for thread in threads):
                time.sleep(SAMPLE_SECONDS)
                processes.check_alive(worker, "worker")
                memory = web.memory_full_info()
                sample = {
                    "seconds": round(time.monotonic() - started, 1),
                    "requests": tally.requests,
                    "rss_mib": round(memory.rss / MIB, 2),
                    "uss_mib": round(memory.uss / MIB, 2),
                    "redis_used_mib": round(int(processes.redis.info("memory")["used_memory"]) / MIB, 1),
                    "jobs": len(tally.submitted),
                }
                samples.append(sample)
                writer.writerow(sample)
                file.flush()
                if len(samples) % 20 == 0:
                    progress(f"soak: {sample}")
        if _web_process(processes).pid != web.pid:
            raise RuntimeError("the web process was replaced during the soak: its figures are not one process's")
        unfinished = _unfinished(processes, tally.submitted)

    after = [s for s in samples if s["requests"] >= WARMUP_REQUESTS] or samples
    half = after[len(after) // 2 :]
    progress(f"soak: samples in {out}; answers {dict(tally.statuses)}")
    return [
        Row("soak", "requests served by the one web process", tally.requests, digits=0),
        Row("soak", "jobs submitted", len(tally.submitted), digits=0),
        Row("soak", "jobs not finished or failed at the end (lost)", unfinished, digits=0),
        Row("soak", "unexpected answers", sum(tally.unexpected.values()), digits=0),
        Row("soak", f"web RSS MiB after {WARMUP_REQUESTS:,} requests", after[0]["rss_mib"]),
        Row("soak", "web RSS MiB at the end", samples[-1]["rss_mib"]),
        Row("soak", "web RSS MiB, most", max(s["rss_mib"] for s in samples)),
        Row("soak", "web RSS growth MiB/hour, second half", _slope(half, "rss_mib"), digits=2),
        Row("soak", "web USS growth MiB/hour, second half", _slope(half, "uss_mib"), digits=2),
    ]


def _unfinished(processes: stack.Stack, job_ids: list[str]) -> int:
    """Jobs neither finished nor failed once the queues have drained (waits up to four minutes)."""
    from rq.job import Job, JobStatus
    from rq.serializers import JSONSerializer

    def count() -> int:
        done = 0
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            for job in Job.fetch_many(chunk, connection=processes.redis, serializer=JSONSerializer):
                if job is not None and job.get_status(refresh=False) in (JobStatus.FINISHED, JobStatus.FAILED):
                    done += 1
        return len(job_ids) - done

    deadline = time.monotonic() + 240  # call_api's last retries wait up to 40 s each
    while (left := count()) and time.monotonic() < deadline:
        time.sleep(2)
    return left
