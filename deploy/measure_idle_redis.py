#!/usr/bin/env python3
"""How many Redis commands an idle deployment sends: fly.toml's app and worker commands, run
here as Fly runs them (one web, two workers), against a redis-server of their own.

    .venv/bin/python deploy/measure_idle_redis.py [--seconds 60] [--workers 2]

Waits for start-up to settle, resets Redis's command statistics, lets everything idle for
``--seconds``, and prints INFO commandstats per command, the rate per hour, and what Fly's
health check (/healthz every 15 s) and metrics scrape (every 15 s) add per hour.
Upstash's pay-as-you-go plan bills per command: this is the bill of doing nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dev  # noqa: E402

FLY = tomllib.loads((ROOT / "fly.toml").read_text())
CHECK_EVERY = 15  # seconds: fly.toml's /healthz interval, and Fly's metrics scrape interval


def commandstats(redis: Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in redis.info("commandstats").items()}


def measure_calls(redis: Redis, call, background: float, times: int = 20) -> float:
    """Redis commands one ``call()`` sends, averaged over ``times`` calls, less the
    ``background`` rate (commands a second) the idle processes send meanwhile."""
    before, started = sum(commandstats(redis).values()), time.monotonic()
    for _ in range(times):
        call()
    elapsed = time.monotonic() - started
    sent = sum(commandstats(redis).values()) - before - 1  # less the INFO itself
    return max(0.0, sent - background * elapsed) / times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    port = dev.free_port()
    url = f"redis://127.0.0.1:{port}/0"
    web_port, metrics_port = dev.free_port(), dev.free_port()
    env = {
        **os.environ,
        **FLY["env"],
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "REDIS_URL": url,
        "SECRET_KEY": "measure-idle-redis-" + "x" * 32,
        "METRICS_TOKEN": "measure",
        "PORT": str(web_port),
        "METRICS_PORT": str(metrics_port),
    }
    processes: list[subprocess.Popen] = []
    with dev.redis_server(dev.find_redis_server(), port):
        redis = Redis.from_url(url)
        try:
            log = subprocess.DEVNULL
            processes.append(
                subprocess.Popen(FLY["processes"]["app"].split(), cwd=ROOT, env=env, stdout=log, stderr=log)
            )
            for _ in range(args.workers):
                command = FLY["processes"]["worker"].split()
                processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log))
            deadline = time.monotonic() + 60
            while redis.scard("rq:workers") < args.workers or not _answers(f"http://127.0.0.1:{web_port}/healthz"):
                if time.monotonic() > deadline:
                    raise SystemExit("the web or the workers did not start")
                time.sleep(0.2)
            time.sleep(5)  # first maintenance passes and scheduler lock races settle

            redis.config_resetstat()
            print(f"idling {args.workers} worker(s) + web for {args.seconds} s ...", flush=True)
            time.sleep(args.seconds)
            stats = commandstats(redis)
            stats["info"] = stats.get("info", 1) - 1  # our own INFO
            total = sum(stats.values())

            background = total / args.seconds
            healthz = measure_calls(
                redis, lambda: httpx.get(f"http://127.0.0.1:{web_port}/healthz", timeout=5), background
            )
            scrape = measure_calls(
                redis, lambda: httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5), background
            )
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)

    per_hour = total * 3600 / args.seconds
    checks_per_hour = 3600 / CHECK_EVERY
    print(f"\nRedis commands while idle, {args.workers} workers (--with-scheduler) + 1 web, {args.seconds} s:")
    for name, calls in sorted(stats.items(), key=lambda item: -item[1]):
        if calls:
            print(f"  {name:<16} {calls:>6}   {calls * 3600 / args.seconds:>9,.0f}/h")
    print(f"  {'total':<16} {total:>6}   {per_hour:>9,.0f}/h   ({per_hour * 24 * 30 / 1e6:.1f} M per 30 days)")
    print(f"\nFly's /healthz check: {healthz:.1f} command(s) each, {healthz * checks_per_hour:,.0f}/h per web Machine")
    print(f"metrics scrape:       {scrape:.1f} command(s) each, {scrape * checks_per_hour:,.0f}/h per web Machine")
    grand = per_hour + (healthz + scrape) * checks_per_hour
    print(f"idle deployment total: {grand:,.0f} commands/h ({grand * 24 * 30 / 1e6:.1f} M per 30 days)")
    return 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
