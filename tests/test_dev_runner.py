"""README command 1 (`python3 dev.py`): starts Redis when none answers, runs web + worker,
and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

import dev
from tests.conftest import ROOT, wait_for


def test_dev_command_starts_its_own_redis_runs_a_job_and_ctrl_c_stops_everything(tmp_path: Path):
    redis_port, web_port = dev.free_port(), dev.free_port()
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "PORT": str(web_port)}
    log = open(tmp_path / "dev.log", "wb")  # noqa: SIM115
    runner = subprocess.Popen(
        [sys.executable, "dev.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    spawned: list[psutil.Process] = []
    try:
        base = f"http://127.0.0.1:{web_port}"
        wait_for(lambda: _answers(base + "/healthz"), timeout=60, what="the dev web server")
        spawned = psutil.Process(runner.pid).children(recursive=True)
        assert any("redis" in " ".join(p.cmdline()) or "valkey" in " ".join(p.cmdline()) for p in spawned)

        created = httpx.post(base + "/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100000}})
        job = wait_for(
            lambda: (j := httpx.get(base + created.headers["Location"]).json())["ended"] and j,
            timeout=60,
            what="the job to end",
        )
        assert job["status"] == "finished" and job["result"]["primes_below_limit"] == 9592

        os.killpg(runner.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        runner.wait(30)
        wait_for(lambda: not any(p.is_running() and p.status() != "zombie" for p in spawned), what="all to exit")
        assert not _answers(base + "/healthz")
        assert not dev.redis_answers(env["REDIS_URL"], timeout=0.2)
    finally:
        for process in spawned:
            if process.is_running():
                process.kill()
        if runner.poll() is None:
            runner.kill()
        log.close()
        print((tmp_path / "dev.log").read_text(errors="replace")[-4000:])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
