"""Faults on real processes, real signals and a real Redis: no job is lost.

Every scenario runs jobs that keep a ledger of their runs (``tests.faults.Ledger``), does its
damage, waits for every job to end, and records what became of them in the session's
figures: submitted / finished / failed / lost, and how long detection took. The workers are
the README's ``rq worker`` command with Offload's shipped settings.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from datetime import UTC
from pathlib import Path

import httpx
import pytest
from redis import Redis
from rq import Queue, Worker
from rq.command import send_shutdown_command
from rq.serializers import JSONSerializer

import dev
from offload import settings
from offload.jobs import attempts as job_attempts
from offload.worker.worker import OffloadWorker
from tests.conftest import ROOT, Stack, process_env, wait_for
from tests.faults import Ledger, alive, parse_time, redis_with
from tests.figures import summary_lines

FAST_MAINTENANCE = {"WORKER_MAINTENANCE_INTERVAL": "1"}
"""Abandoned jobs found within a second of their lease's end (the heartbeat stays as shipped)."""


def _crash(ledger: Ledger, job_id: str) -> dict:
    """The attempt the worker marked as crashed for ``job_id``."""
    return next(a for a in job_attempts(ledger.fetch(job_id)) if a["outcome"] == "crashed")


# --------------------------------------------------------------------------- 1. killed workers


def test_shipped_settings_find_an_abandoned_job_within_a_minute(redis):
    """RQ's stock values take 90 s to 11.5 min; Offload's heartbeat TTL plus maintenance interval stay under 60 s."""
    # The CLI passes RQ's defaults explicitly, exactly like this.
    worker = OffloadWorker(["default"], connection=redis, job_monitoring_interval=30, maintenance_interval=600)
    job = Queue("default", connection=redis, serializer=JSONSerializer).enqueue("tests.fixtures.burn_cpu", 1)

    longest_silence = worker.get_heartbeat_ttl(job)
    assert worker.job_monitoring_interval == settings.DEFAULTS["WORKER_HEARTBEAT_INTERVAL"]
    assert longest_silence > 2 * worker.job_monitoring_interval - 1  # one missed heartbeat is not death
    assert longest_silence + worker.maintenance_interval < 60
    # An idle worker wakes from its blocking wait in time for maintenance.
    assert worker.dequeue_timeout <= worker.maintenance_interval
    # A CLI flag still wins.
    chosen = OffloadWorker(["default"], connection=redis, job_monitoring_interval=7, maintenance_interval=45)
    assert (chosen.job_monitoring_interval, chosen.maintenance_interval) == (7, 45)


def _abandon(worker: OffloadWorker, job_id: str, redis: Redis) -> None:
    """Make ``job_id`` look like a job whose worker died mid-run: started, heartbeat expired."""
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.fetch_job(job_id)
    redis.lrem(queue.key, 0, job_id)
    worker.prepare_execution(job)
    job.set_status("started")
    registry = queue.started_job_registry
    redis.zadd(registry.key, dict.fromkeys(redis.zrange(registry.key, 0, -1), 1))  # expired long ago


def test_abandoned_job_uses_its_retries_then_one_crash_rerun_then_fails_with_the_reason(client, redis):
    worker = OffloadWorker(["default"], connection=redis)
    job_id = client.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}}).get_json()["id"]
    _abandon(worker, job_id, redis)
    assert client.get("/jobs").status_code == 200  # pages only read: RQ's cleanup is left to workers
    assert client.get(f"/api/jobs/{job_id}").get_json()["status"] == "started"

    seen = []
    for crash in range(4):
        if crash:
            _abandon(worker, job_id, redis)
        worker.clean_registries()
        view = client.get(f"/api/jobs/{job_id}").get_json()
        seen.append((view["status"], view["retries_left"]))

    # crunch_numbers has Retry(max=2, interval=[10, 30]); then CRASH_RERUNS=1, at once; then it fails.
    assert seen == [("scheduled", 1), ("scheduled", 0), ("queued", 0), ("failed", 0)]
    # RQ's "Moved to FailedJobRegistry, due to AbandonedJobError" reads as a sentence to its submitter.
    assert client.get(f"/api/jobs/{job_id}").get_json()["error"] == "The worker running this job stopped unexpectedly."


@pytest.mark.e2e
def test_killed_workers_and_work_horses_lose_no_job_and_finish_each_once(stack: Stack, redis: Redis, figures):
    jobs, seconds = 300, 0.2
    stack.start_worker("worker-2")
    ledger = Ledger(redis, "kills")
    ledger.submit(jobs, seconds)

    kills: list[tuple[str, str, float]] = []
    victims: set[str] = set()
    for number in range(6):
        kind = "work horse" if number % 2 == 0 else "worker"
        wait_for(lambda n=number: len(ledger.done()) >= (n + 1) * jobs // 8, timeout=120, what="jobs to flow")
        # Mid-job: less than half of its work done, so no completion is in flight.
        victim = wait_for(
            lambda: ledger.in_progress(younger_than=seconds * 0.4, exclude=victims), timeout=30, what="a running job"
        )
        victims.add(victim.job_id)
        killed_at = time.time()
        if kind == "work horse":
            os.kill(victim.pid, signal.SIGKILL)
        else:
            os.killpg(victim.worker_pid, signal.SIGKILL)  # the worker and its scheduler, as a lost machine
            wait_for(lambda v=victim: not alive(v.pid), timeout=10, what="the work horse to die with its worker")
            stack.start_worker(f"worker-after-kill-{number}")  # what Fly's restart policy does
        kills.append((kind, victim.job_id, killed_at))

    wait_for(ledger.settled, timeout=180, interval=0.5, what="every job to end")
    tally = ledger.tally()
    runs = ledger.runs()
    detection = {"worker": [], "work horse": []}
    for kind, job_id, killed_at in kills:
        crash = _crash(ledger, job_id)
        detection[kind].append(parse_time(crash["ended_at"]) - killed_at)
        assert ledger.fetch(job_id).get_status() == "finished"
        assert runs[job_id] == 2, (kind, job_id)
        expected = "killed by SIGKILL" if kind == "work horse" else "AbandonedJobError"
        assert expected in crash["error"]
    figures.record(
        "worker killed (SIGKILL, 2 workers)",
        **tally,
        workers_killed=len(detection["worker"]),
        horses_killed=len(detection["work horse"]),
        abandoned_detection_max_s=max(detection["worker"]),
        abandoned_detection_min_s=min(detection["worker"]),
        horse_kill_detection_max_s=max(detection["work horse"]),
    )
    print("detection seconds per kill:", [(kind, round(d, 2)) for kind, ds in detection.items() for d in ds])
    assert tally["lost"] == 0
    assert tally["finished"] == jobs
    assert tally["finished_not_exactly_once"] == 0 and tally["completed_twice"] == 0
    assert tally["reruns"] == len(kills)


@pytest.mark.e2e
def test_job_whose_work_horse_dies_twice_fails_with_the_reason_shown(stack: Stack, redis: Redis, http: httpx.Client):
    ledger = Ledger(redis, "twice")
    [job_id] = ledger.submit(1, seconds=5)
    for run in (1, 2):
        running = wait_for(lambda r=run: ledger.runs().get(job_id) == r and ledger.in_progress(5), what=f"run {run}")
        os.kill(running.pid, signal.SIGKILL)
        wait_for(lambda p=running.pid: not alive(p), what="the work horse to die")

    view = wait_for(lambda: (v := http.get(f"/api/jobs/{job_id}").json())["ended"] and v, what="the job to end")

    assert view["status"] == "failed"
    assert [attempt["outcome"] for attempt in view["attempts"]] == ["crashed", "crashed"]
    assert view["error"] == "The worker running this job stopped unexpectedly."  # operators see the signal
    assert ledger.done() == {}


# --------------------------------------------------------------------------- 2. Redis restarted


@pytest.mark.e2e
def test_redis_restart_with_aof_loses_no_job_and_web_and_workers_recover_by_themselves(tmp_path: Path, figures):
    port = dev.free_port()
    url = f"redis://127.0.0.1:{port}/0"
    data = tmp_path / "redis-data"

    def redis_server():
        return dev.redis_server(dev.find_redis_server(), port, data_dir=data, appendonly=True)

    stack = Stack(redis_url=url, logs=tmp_path, env=process_env(url))
    http = httpx.Client(timeout=10)
    try:
        with redis_server():
            base = stack.start_web()
            workers = [stack.start_worker("worker-1"), stack.start_worker("worker-2")]
            ledger = Ledger(Redis.from_url(url), "restart")
            ledger.submit(200, seconds=0.05)
            wait_for(lambda: len(ledger.done()) >= 40, timeout=60, what="jobs to flow")

        # Redis is down (stopped with SIGTERM: the AOF is flushed, as on a Fly restart), for 5 s.
        down_at = time.time()
        seen = {name: len(stack.log(name)) for name in ("worker-1", "worker-2")}
        wait_for(
            lambda: all("Redis" in stack.log(name)[start:] for name, start in seen.items()),
            timeout=30,
            what="both workers to notice",
        )
        answers = 0

        def refused_while_down() -> bool:
            """Probe the web; True once Redis has been down for 5 s."""
            nonlocal answers
            api = http.post(f"{base}/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}})
            page = http.get(f"{base}/jobs/{ledger.job_ids[0]}")
            assert api.status_code == 503 and api.headers["Retry-After"]
            assert "unreachable" in api.json()["error"]
            assert page.status_code == 503 and "unreachable" in page.text and "Traceback" not in page.text
            answers += 2
            return time.time() - down_at >= 5

        wait_for(refused_while_down, timeout=30, interval=0.5, what="Redis to have been down 5 s")
        assert all(worker.poll() is None for worker in workers), "a worker quit while Redis was down"

        with redis_server():
            down_seconds = time.time() - down_at
            up_at = time.time()
            wait_for(lambda: http.get(f"{base}/healthz").status_code == 200, what="the web to recover")
            web_recovery = time.time() - up_at
            assert http.post(f"{base}/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}}).is_success
            wait_for(ledger.settled, timeout=120, interval=0.5, what="every job to end")
            tally = ledger.tally()
            figures.record(
                "Redis restarted (AOF, 2 workers)",
                **tally,
                redis_down_s=down_seconds,
                web_503_answers=answers,
                web_recovery_s=web_recovery,
                worker_restarts=sum(worker.poll() is not None for worker in workers),
            )
            assert tally["lost"] == 0 and tally["failed"] == 0
            assert tally["finished"] == 200 and tally["finished_not_exactly_once"] == 0
            assert all(worker.poll() is None for worker in workers)

            # Their pubsub subscriptions came back too (rq #1836): a shutdown command reaches each.
            redis = Redis.from_url(url)
            for registered in Worker.all(connection=redis):
                send_shutdown_command(redis, registered.name)
            for worker in workers:
                assert worker.wait(30) == 0
            for name in ("worker-1", "worker-2"):
                # Said as a warning, once and then at 4, 8 ... s, by each step and thread that
                # met it (RQ's command channel thread said ERROR every 2 s).
                log = stack.log(name)
                assert "could not connect to Redis instance" not in log and " ERROR " not in log, log
                assert log.count("Redis unreachable on its command channel") == 1, log
    finally:
        http.close()
        stack.close()
        for name in ("web", "worker-1", "worker-2"):
            print(f"----- {name} log -----\n{stack.log(name)[-3000:]}")


@pytest.mark.e2e
def test_a_job_that_finishes_while_redis_restarts_is_recorded_when_redis_returns_not_run_again(tmp_path: Path):
    """A tester's report: a job whose work ended while Redis restarted (20 s, AOF) was killed 3 s after
    Redis came back ("Redis did not take its heartbeat ...") and ran again, its result thrown away:
    the end write retried after 8 s, then 16 s, and the heartbeat comes every 10 s."""
    data = tmp_path / "redis-data"
    data.mkdir()
    with redis_with("--appendonly", "yes", data_dir=data) as server:
        stack = Stack(redis_url=server.url, logs=tmp_path, env={**process_env(server.url), **FAST_MAINTENANCE})
        try:
            stack.start_worker("worker")  # the shipped heartbeat: every 10 s, a 31 s lease
            redis = Redis.from_url(server.url)
            queue = Queue("default", connection=redis, serializer=JSONSerializer)
            job = queue.enqueue("tests.fixtures.burn_cpu", 3)
            wait_for(lambda: job.get_status(refresh=True) == "started", interval=0.02, what="the job to start")
            [(_, lease_end)] = redis.zrange(queue.started_job_registry.key, 0, -1, withscores=True)
            server.shut_down()  # the job's work ends 3 s later, with Redis gone

            # Back 3.5 s before the worker's deadline (the lease's end less half a heartbeat interval):
            # after the worker's second failed heartbeat (10 and 20 s into the job), before its third.
            time.sleep(max(0.0, lease_end - 5 - 3.5 - time.time()))
            server.start()
            back_at = time.time()

            ended = wait_for(
                lambda: job.get_status(refresh=True) in ("finished", "failed") and job,
                timeout=90,
                what="the job to end",
            )
            ended.refresh()
            log = stack.log("worker")
            assert ended.get_status() == "finished", log
            assert [attempt["outcome"] for attempt in job_attempts(ended)] == ["finished"], log
            assert "stopping job" not in log
            assert ended.return_value() == "done"
            assert ended.ended_at is not None
            assert ended.ended_at.replace(tzinfo=UTC).timestamp() < back_at  # its work ended during the outage
            print(f"Redis back {lease_end - 5 - back_at:.1f} s before the worker's deadline")
        finally:
            stack.close()
            print(f"----- worker log -----\n{stack.log('worker')[-6000:]}")


# --------------------------------------------------------------------------- 3. Redis absent at start-up


@pytest.mark.e2e
def test_worker_without_redis_says_so_in_one_line_and_exits_1():
    port = dev.free_port()
    url = f"redis://:s3cret-pass@127.0.0.1:{port}/0"

    result = subprocess.run(
        shlex.split(dev.WORKER_COMMAND), cwd=ROOT, env=process_env(url), capture_output=True, text=True, timeout=60
    )

    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 1
    assert len(lines) == 1, lines
    assert f"Redis at redis://:***@127.0.0.1:{port}/0 is unreachable" in lines[0]
    assert "Connection refused" in lines[0] and "s3cret-pass" not in lines[0]


@pytest.mark.e2e
def test_web_without_redis_says_so_once_answers_503_and_recovers_when_redis_starts(tmp_path: Path):
    port = dev.free_port()
    url = f"redis://127.0.0.1:{port}/0"
    stack = Stack(redis_url=url, logs=tmp_path, env=process_env(url))
    web_port = dev.free_port()
    base = f"http://127.0.0.1:{web_port}"
    try:
        stack.spawn("web", ["gunicorn", "app:app"], GUNICORN_BIND=f"127.0.0.1:{web_port}")

        def health() -> int:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code
            except httpx.HTTPError:
                return 0

        assert wait_for(health, what="gunicorn to answer") == 503
        mentions = [line for line in stack.log("web").splitlines() if "Redis" in line]
        assert len(mentions) == 1, mentions
        assert f"Redis at {url} is unreachable" in mentions[0] and "answering 503" in mentions[0]
        assert "Traceback" not in stack.log("web")

        with dev.redis_server(dev.find_redis_server(), port):
            wait_for(lambda: health() == 200, what="the web to recover without a restart")
    finally:
        stack.close()


# --------------------------------------------------------------------------- 4. Redis that loses data


def _registered(redis: Redis, processes: list[subprocess.Popen]) -> bool:
    pids = {worker.pid for worker in Worker.all(connection=redis)}
    return all(process.pid in pids for process in processes)


def _drained(redis: Redis) -> bool:
    """Nothing waits in the default queue and nothing runs."""
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    return queue.count == 0 and queue.started_job_registry.count == 0


@pytest.mark.e2e
def test_redis_killed_without_persistence_is_said_loudly_and_workers_register_again(tmp_path: Path, figures):
    """Before: 139 of 282 jobs lost with no log line, and rq:workers empty for 13 min while workers ran."""
    with redis_with() as server:  # no AOF, no save points
        env = {**process_env(server.url), "METRICS_TOKEN": "fault-figures"}
        stack = Stack(redis_url=server.url, logs=tmp_path, env=env)
        try:
            stack.start_web()
            workers = [stack.start_worker("worker-1"), stack.start_worker("worker-2")]
            redis = Redis.from_url(server.url)
            ledger = Ledger(redis, "wiped")
            before = ledger.submit(300, seconds=0.05)
            wait_for(lambda: len(ledger.done()) >= 60, timeout=90, what="jobs to flow")

            finished_before = len(ledger.done())
            server.kill()
            server.start()  # same port, empty: what a restart without persistence gives
            restarted_at = time.monotonic()
            # The first health probe after the restart (Fly sends one every 15 s) has the web say it.
            assert httpx.get(f"{stack.base_url}/healthz", timeout=10).status_code == 200
            wait_for(lambda: "lost its data" in stack.log("web"), timeout=10, what="the web to say Redis lost its data")
            web_said_s = time.monotonic() - restarted_at

            wait_for(
                lambda: _registered(redis, workers), timeout=90, interval=0.5, what="both workers to register again"
            )
            registered_s = time.monotonic() - restarted_at
            said = wait_for(
                lambda: [name for name in ("worker-1", "worker-2") if "lost its data" in stack.log(name)],
                timeout=30,
                what="a worker to say Redis lost its data",
            )
            said_s = time.monotonic() - restarted_at
            assert all(worker.poll() is None for worker in workers)
            assert "its registration in Redis is gone" in stack.log(said[0])

            after = ledger.submit(50, seconds=0.05)  # Offload recovered its own state: new jobs run
            wait_for(
                lambda: (
                    all(s == "finished" for s in ledger.statuses().values() if s != "missing")
                    and _drained(redis)
                    and sum(1 for job_id in after if ledger.statuses()[job_id] == "finished") == len(after)
                ),
                timeout=120,
                interval=0.5,
                what="the jobs after the restart to finish",
            )
            statuses = ledger.statuses()
            lost = [job_id for job_id in before if statuses[job_id] != "finished"]
            metrics = httpx.get(
                f"{stack.base_url}/metrics", headers={"Authorization": "Bearer fault-figures"}, timeout=10
            ).text
            figures.record(
                "Redis killed without persistence mid-load (2 workers)",
                accepted=len(before) + len(after),
                finished=sum(1 for status in statuses.values() if status == "finished"),
                lost=len(lost),
                lost_because=(
                    f"Redis had no persistence and restarted empty: the {len(lost)} jobs it held before the kill "
                    f"(about {finished_before} of them already finished, their results gone) went with it. Offload "
                    f"said so: the web at its first health probe, {web_said_s:.1f} s after the restart, and a worker "
                    f"at its next maintenance pass, {said_s:.1f} s; the loss is counted "
                    "(offload_redis_data_losses_total) and shown on the operators' pages"
                ),
                workers_registered_again_s=registered_s,
                web_said_loss_s=web_said_s,
                worker_said_loss_s=said_s,
            )
            assert "offload_redis_data_losses_total 1.0" in metrics
            assert 'offload_redis_unsafe{check="persistence"} 1.0' in metrics
            assert all(statuses[job_id] == "finished" for job_id in after)
        finally:
            stack.close()
            for name in ("web", "worker-1", "worker-2"):
                print(f"----- {name} log -----\n{stack.log(name)[-3000:]}")


def _settled_or_gone(ledger: Ledger) -> bool:
    """Every job finished, failed or vanished, and nothing waits or runs."""
    return _drained(ledger.redis) and all(
        status in ("finished", "failed", "missing") for status in ledger.statuses().values()
    )


@pytest.mark.e2e
def test_evicting_redis_under_memory_pressure_is_said_at_start_and_its_losses_counted(tmp_path: Path, figures):
    """Before: of 2,000 jobs 220 never ran and 1,454 answered 404, with /healthz 200 and no warning anywhere."""
    with redis_with("--maxmemory", "5mb", "--maxmemory-policy", "allkeys-lru") as server:
        env = {**process_env(server.url), "METRICS_TOKEN": "fault-figures"}
        stack = Stack(redis_url=server.url, logs=tmp_path, env=env)
        try:
            stack.start_web()
            stack.start_worker("worker-1")
            stack.start_worker("worker-2")
            for name in ("web", "worker-1", "worker-2"):
                assert "has maxmemory-policy allkeys-lru" in stack.log(name), name
            assert "ERROR" in next(line for line in stack.log("web").splitlines() if "allkeys-lru" in line)
            health = httpx.get(f"{stack.base_url}/healthz", timeout=10).json()
            assert any("allkeys-lru" in problem for problem in health["redis_problems"])
            metrics = httpx.get(
                f"{stack.base_url}/metrics", headers={"Authorization": "Bearer fault-figures"}, timeout=10
            ).text
            assert 'offload_redis_unsafe{check="eviction"} 1.0' in metrics

            redis = Redis.from_url(server.url)
            ledger = Ledger(redis, "evicted")
            ledger.submit(2000)
            wait_for(lambda: _settled_or_gone(ledger), timeout=240, interval=1, what="the jobs to end or vanish")
            statuses = ledger.statuses()
            evicted = redis.info("stats")["evicted_keys"]
            counts = {
                kind: sum(1 for s in statuses.values() if s == kind) for kind in ("finished", "failed", "missing")
            }
            figures.record(
                "Redis maxmemory 5mb allkeys-lru (2 workers)",
                accepted=len(statuses),
                finished=counts["finished"],
                failed=counts["failed"],
                lost=counts["missing"],
                lost_because=(
                    f"maxmemory-policy allkeys-lru evicted {evicted} keys under memory pressure, job hashes and "
                    "queue entries among them. Offload said so at start (an ERROR in web and worker logs naming the "
                    "fix, /healthz's redis_problems, offload_redis_unsafe{check=eviction} 1, the operators' banner); "
                    "in production OFFLOAD_REQUIRE_SAFE_REDIS refuses to start on such a Redis"
                ),
                evicted_keys=evicted,
            )
        finally:
            stack.close()
            for name in ("web", "worker-1", "worker-2"):
                print(f"----- {name} log -----\n{stack.log(name)[-2000:]}")


@pytest.mark.e2e
def test_frozen_redis_mid_load_loses_no_job(tmp_path: Path, figures):
    """Redis SIGSTOPped for 8 s while jobs run: the web answers 503 meanwhile, every job finishes once."""
    with redis_with() as server:
        stack = Stack(redis_url=server.url, logs=tmp_path, env=process_env(server.url))
        try:
            stack.start_web()
            stack.start_worker("worker-1")
            stack.start_worker("worker-2")
            redis = Redis.from_url(server.url)
            ledger = Ledger(redis, "frozen")
            ledger.submit(200, seconds=0.05)
            wait_for(lambda: len(ledger.done()) >= 40, timeout=90, what="jobs to flow")

            server.freeze()
            frozen_at = time.monotonic()
            slowest = 0.0
            with httpx.Client(base_url=stack.base_url, timeout=30) as http:
                while time.monotonic() - frozen_at < 8:
                    began = time.monotonic()
                    answer = http.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}})
                    slowest = max(slowest, time.monotonic() - began)
                    assert answer.status_code == 503
            server.thaw()

            wait_for(ledger.settled, timeout=120, interval=0.5, what="every job to end")
            tally = ledger.tally()
            figures.record(
                "Redis frozen 8 s (SIGSTOP) mid-load (2 workers)",
                accepted=tally["submitted"],
                **{k: v for k, v in tally.items() if k != "submitted"},
                web_503_slowest_s=slowest,
            )
            assert tally["lost"] == 0 and tally["failed"] == 0
            assert tally["finished_not_exactly_once"] == 0
            assert slowest < 2
        finally:
            server.thaw()
            stack.close()
            for name in ("web", "worker-1", "worker-2"):
                print(f"----- {name} log -----\n{stack.log(name)[-2000:]}")


def test_fault_figures_print_jobs_accepted_finished_lost_first_and_why_any_was_lost():
    lines = summary_lines(
        {
            "explained": {"detection_s": 1.5, "lost": 2, "accepted": 5, "finished": 3, "lost_because": "Redis evicted"},
            "unexplained": {"accepted": 1, "finished": 0, "lost": 1},
            "none lost": {"submitted": 4, "finished": 4, "lost": 0},
        }
    )

    assert lines == [
        "explained: accepted=5, finished=3, lost=2, detection_s=1.50",
        "    lost 2 because: Redis evicted",
        "unexplained: accepted=1, finished=0, lost=1",
        "    lost 1 because: UNEXPLAINED",
        "none lost: submitted=4, finished=4, lost=0",
    ]
