"""Every RQ 3.0.0 method Offload overrides, in one place; private ones marked.

tests/test_worker_overrides.py compares this table with the classes themselves (every
attribute of an Offload class that RQ's class also has), so an override added or removed
without a line here fails the tests. RQ is pinned (requirements.txt): on an upgrade, read each
private one's source again, then run RQ's own tests against the worker (tests/rq_suite).
"""

from __future__ import annotations

from typing import NamedTuple


class Override(NamedTuple):
    rq_class: str
    method: str
    module: str
    """The offload module whose class overrides it."""
    private: bool
    why: str


def _o(rq_class: str, method: str, module: str, why: str) -> Override:
    return Override(rq_class, method, module, method.startswith("_") and not method.endswith("__"), why)


W, J, Q, S = "rq.Worker", "rq.job.Job", "rq.Queue", "rq.scheduler.RQScheduler"

RQ_OVERRIDES: tuple[Override, ...] = (
    # rq.Worker (offload.worker.*, offload.metrics)
    _o(W, "__init__", "offload.worker.construction", "JSON, Offload's classes and settings, the host app"),
    _o(W, "bootstrap", "offload.worker.appcontext", "runs the app's worker-startup hooks before the job process forks"),
    _o(W, "perform_job", "offload.worker.appcontext", "the app context and the job's log around the job"),
    _o(W, "_start_scheduler", "offload.worker.scheduler_host", "PRIVATE: RQ has no hook for the scheduler class"),
    _o(W, "handle_execution_ended", "offload.worker.attempts", "a failed run's record in RQ's end write"),
    _o(W, "handle_job_failure", "offload.worker.retry_hints", "the exception's retry hints before RQ's retry"),
    _o(W, "handle_exception", "offload.worker.retry_hints", "a retried attempt is a one-line warning, not an error"),
    _o(W, "handle_job_failure", "offload.worker.attempts", "a stopped job's attempt and end time"),
    _o(W, "handle_job_failure", "offload.worker.lease", "a job given up (lease lost) is left to maintenance"),
    _o(W, "handle_job_failure", "offload.metrics", "counts the failed attempt"),
    _o(W, "prepare_execution", "offload.worker.lease", "starts the job's lease"),
    _o(W, "prepare_execution", "offload.worker.outages", "waits Redis out; a retry removes the earlier try's writes"),
    _o(W, "maintain_heartbeats", "offload.worker.lease", "waits Redis out; renews the job's lease"),
    _o(W, "execute_job", "offload.worker.lease", "a watchdog gives the job up before its lease lapses"),
    _o(W, "handle_work_horse_killed", "offload.worker.lease", "a job given up is not a crash"),
    _o(W, "handle_work_horse_killed", "offload.worker.crash_reruns", "records the crash or the kill; crash re-runs"),
    _o(W, "check_for_suspension", "offload.worker.outages", "waits Redis out"),
    _o(W, "prepare_job_execution", "offload.worker.outages", "waits Redis out"),
    _o(W, "prepare_job_execution", "offload.metrics", "counts the started attempt"),
    _o(W, "handle_job_success", "offload.worker.outages", "waits Redis out; a committed success is not repeated"),
    _o(W, "handle_job_success", "offload.metrics", "counts the finished attempt"),
    _o(W, "cleanup_execution", "offload.worker.outages", "an end-of-execution transaction commits once"),
    _o(W, "request_stop", "offload.worker.outages", "a stop signal works while Redis is down"),
    _o(W, "work", "offload.worker.outages", "exits 1 when the loop ends unexpectedly (rq #1933)"),
    _o(W, "_pubsub_exception_handler", "offload.worker.outages", "PRIVATE: RQ says ERROR every 2 s of an outage"),
    _o(W, "get_heartbeat_ttl", "offload.worker.crash_reruns", "3 intervals + 1 s instead of interval + 60 s"),
    _o(W, "kill_horse", "offload.worker.crash_reruns", "notes a deliberate kill, so it is not taken for a crash"),
    _o(W, "dequeue_timeout", "offload.worker.maintenance", "wakes in time for maintenance"),
    _o(W, "run_maintenance_tasks", "offload.worker.maintenance", "abandoned jobs often, the rest less often"),
    _o(W, "run_maintenance_tasks", "offload.worker.registration", "registers again when Redis lost it"),
    _o(W, "bootstrap", "offload.worker.registration", "a stop signal once registered is a warm stop"),
    _o(
        W,
        "clean_registries",
        "offload.worker.maintenance",
        "crash re-runs granted, orphans put back, before RQ's cleanup",
    ),
    _o(W, "register_birth", "offload.worker.maintenance", "notes the worker among those that take jobs"),
    _o(W, "register_death", "offload.worker.maintenance", "puts back a job its last take's lost reply left"),
    _o(W, "execute_job", "offload.worker.jobprocess", "refuses non-JSON jobs; one job process, one round trip"),
    _o(W, "fork_work_horse", "offload.worker.jobprocess", "hands the job to the long-lived job process"),
    _o(W, "wait_for_horse", "offload.worker.jobprocess", "waits for the job process's report"),
    _o(W, "teardown", "offload.worker.jobprocess", "stops the job process"),
    _o(W, "setup_work_horse_signals", "offload.worker.jobprocess", "the job process dies with the worker"),
    _o(W, "heartbeat", "offload.worker.roundtrips", "one round trip, skipped when redundant"),
    _o(W, "set_state", "offload.worker.roundtrips", "skipped when unchanged; waits Redis out"),
    _o(W, "work", "offload.worker.slots", "notes its arguments for the other slots' workers"),
    _o(W, "bootstrap", "offload.worker.slots", "forks a worker per other slot after the preload"),
    _o(W, "request_stop", "offload.worker.slots", "passes the signal on to the other slots"),
    _o(W, "request_force_stop", "offload.worker.slots", "passes the second signal on to the other slots"),
    _o(W, "run_maintenance_tasks", "offload.worker.slots", "starts a dead slot's worker again"),
    _o(W, "teardown", "offload.worker.slots", "waits for the other slots to finish"),
    _o(W, "maintain_heartbeats", "offload.worker.slots", "starts a dead slot's worker again during a long job"),
    _o(W, "check_for_suspension", "offload.worker.roundtrips", "checked by the take script instead"),
    _o(
        W,
        "dequeue_job_and_maintain_ttl",
        "offload.worker.roundtrips",
        "pop and read a job in one script; its own wait, which waits Redis out every second",
    ),
    _o(W, "prepare_execution", "offload.worker.roundtrips", "the job's start in the execution's transaction"),
    _o(W, "prepare_job_execution", "offload.worker.roundtrips", "skipped when the worker wrote the start"),
    _o(W, "handle_job_success", "offload.worker.roundtrips", "RQ's success transaction in one script"),
    _o(W, "handle_job_retry", "offload.worker.roundtrips", "writes a held attempt end first"),
    _o(W, "handle_job_failure", "offload.worker.roundtrips", "writes a held attempt end first"),
    _o(W, "dequeue_job_and_maintain_ttl", "offload.worker.holds", "skips paused queues; a quiet worker takes none"),
    _o(W, "register_death", "offload.worker.holds", "forgets the worker's quiet mark"),
    _o(W, "subscribe", "offload.worker.holds", "also listens for changes of the holds"),
    _o(W, "unsubscribe", "offload.worker.holds", "waits for the thread to close the pubsub, never closes it too"),
    # rq.job.Job
    _o(J, "restore", "offload.legacy", "callback paths stored by earlier releases, read as they are now"),
    _o(J, "retry", "offload.worker.job", "a delayed retry's status in the failure's transaction, not before it"),
    # rq.Queue (offload.queues: shared by the web and the workers)
    _o(Q, "create_job", "offload.queues", "notes a job with a new id"),
    _o(Q, "enqueue_job", "offload.queues", "one round trip per enqueue"),
    _o(Q, "_persist_job", "offload.queues", "PRIVATE: three writes per job instead of six"),
    _o(Q, "schedule_job", "offload.queues", "wakes the scheduler"),
    # rq.scheduler.RQScheduler
    _o(S, "__init__", "offload.periodic", "the app's config and tasks, for periodic jobs"),
    _o(S, "enqueue_scheduled_jobs", "offload.periodic", "also enqueues due periodic jobs"),
    _o(S, "__init__", "offload.worker.scheduler", "its longest sleep"),
    _o(S, "request_stop", "offload.worker.scheduler", "ends a sleep at once"),
    _o(S, "enqueue_scheduled_jobs", "offload.worker.scheduler", "notes the round; starts on-demand workers"),
    _o(S, "work", "offload.worker.scheduler", "sleeps until a job is due; waits Redis out"),
    _o(S, "start", "offload.worker.scheduler", "stop signals held until the process can handle them"),
)

PRIVATE_RQ_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("Queue._default_timeout", "construction.json_queue keeps a rebuilt queue's timeout: no public reader"),
    ("Job._status", "attempts reads the cached status in handle_execution_ended without a round trip"),
    ("Worker._horse_pid, Worker._is_horse", "the job process stands in for RQ's work horse"),
    ("Worker._stop_requested, Worker._state", "outages/roundtrips: stop while Redis is down; skip a state write"),
    ("Worker._ordered_queues", "holds: the queues one dequeue listens on, without the paused ones"),
    ("Worker._exc_handlers", "maintenance calls RQ's registry cleanup with them, as RQ does"),
    ("Worker._ordered_queues", "roundtrips: the take script pops in the order RQ's dequeue would"),
    ("Job._dependency_ids", "roundtrips: a job with none has no dependencies set whose TTL to set"),
    ("Job._handle_success (a method, called)", "roundtrips: RQ's own success writes, gathered for the end script"),
    ("RQScheduler._process, _acquired_locks, _scheduled_job_registries", "scheduler hosting and sleeping"),
    ("Job._success_callback_name, _failure_callback_name, _stopped_callback_name", "legacy: moved callback paths"),
    ("Execution._job", "the job process rebuilds the execution RQ's fork would have inherited"),
)
"""Private attributes of RQ's that Offload reads or sets (not methods), and why."""
