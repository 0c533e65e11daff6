"""Job slots: one worker runs ``WORKER_SLOTS`` jobs at once, so I/O-bound tasks (an API call, a
mail) fill a Machine instead of leaving it waiting.

Each slot is a whole Offload worker (its own name in ``rq info``, its own job process): crash
isolation, stop commands, timeouts, the lease and crash re-runs hold for every slot as for one.

- The worker that was started (slot 1) forks one worker per other slot right after its
  worker-startup hooks ran, so every slot shares the libraries and models they preloaded
  (copy-on-write); the others run no scheduler and no hooks of their own.
- A stop signal (SIGTERM, SIGINT) to slot 1 is passed on to the others: every slot shuts down
  warm, finishing its job, and slot 1 exits once they all have; a second signal is passed on too.
- A slot that dies (killed, out of memory) is started again at slot 1's next maintenance pass
  or heartbeat; its job is found abandoned and re-run like any dead worker's. Every slot dies with slot 1
  (``PR_SET_PDEATHSIG``), so none outlives the process Fly stops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

from offload.worker.base import WorkerBase
from offload.worker.parenting import die_with_parent


def slot_count(configured: int) -> int:
    """The number of slots: ``configured``, or with 0 ("auto") the CPUs of a Fly Machine (1 elsewhere)."""
    if configured > 0:
        return configured
    if os.environ.get("FLY_MACHINE_ID"):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 1


class Slots(WorkerBase):
    """Worker mixin: slot 1 forks a worker per other slot, passes signals on, restarts dead ones."""

    slots: int = 1
    slot: int = 1
    """Which slot this worker is: 1 for the worker that was started, 2.. for the ones it forked."""
    _slot_pids: dict[int, int] | None = None
    """Slot 1 only: the pid of each other slot's worker, by slot."""
    _work_kwargs: dict[str, Any] | None = None
    _init_arguments: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    def work(self, *args: Any, **kwargs: Any) -> bool:
        names = ("burst", "logging_level", "date_format", "log_format", "max_jobs", "max_idle_time")
        self._work_kwargs = {**dict(zip(names, args, strict=False)), **kwargs}
        return super().work(*args, **kwargs)

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        # After the host app's worker-startup hooks (appcontext.py), before RQ registers this worker.
        if self.slot == 1 and self.slots > 1 and self._slot_pids is None:
            self._slot_pids = {}
            for slot in range(2, self.slots + 1):
                self._start_slot(slot)
            self.log.info("Worker %s: running %d slots (%s)", self.name, self.slots, self._slot_pids)
        super().bootstrap(*args, **kwargs)

    def _start_slot(self, slot: int) -> None:
        """Fork the worker of ``slot``: a new Offload worker on the same queues, which never returns here."""
        assert self._slot_pids is not None and self._init_arguments is not None
        parent = os.getpid()
        pid = os.fork()
        if pid:
            self._slot_pids[slot] = pid
            return
        code = 1
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)  # until its own worker installs RQ's handlers
            die_with_parent(parent)
            args, kwargs = self._init_arguments
            if kwargs.get("name"):
                kwargs = {**kwargs, "name": f"{kwargs['name']}-{slot}"}
            worker = type(self)(*args, **kwargs)
            worker.slot = slot
            work_kwargs = {**(self._work_kwargs or {}), "with_scheduler": False}
            worker.work(**work_kwargs)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            self.log.exception("Worker slot %d failed", slot)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _pass_on(self, signum: int) -> None:
        for pid in (self._slot_pids or {}).values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def request_stop(self, signum, frame) -> None:
        self._pass_on(signum)
        super().request_stop(signum, frame)

    def request_force_stop(self, signum, frame) -> None:
        self._pass_on(signum)
        super().request_force_stop(signum, frame)

    def run_maintenance_tasks(self) -> None:
        self._restart_dead_slots()
        super().run_maintenance_tasks()

    def maintain_heartbeats(self, job, execution) -> None:
        self._restart_dead_slots()  # slot 1 may be busy with a long job of its own
        super().maintain_heartbeats(job, execution)

    def _restart_dead_slots(self) -> None:
        """Start again each slot whose worker died (not a clean exit: burst, max jobs, a stop)."""
        for slot, pid in list((self._slot_pids or {}).items()):
            try:
                reaped, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                reaped, status = pid, 1
            if not reaped:
                continue
            del self._slot_pids[slot]
            if status != 0 and not self._stop_requested:
                self.log.warning(
                    "Worker %s: slot %d (pid %d) died (wait status %d); starting it again", self.name, slot, pid, status
                )
                self._start_slot(slot)

    def teardown(self) -> None:
        if self._slot_pids and not self.is_horse:
            if not self._stop_requested and not self._ends_by_itself():
                self._pass_on(signal.SIGTERM)  # slot 1's loop ended on an error: stop the others too
            for slot, pid in list(self._slot_pids.items()):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                del self._slot_pids[slot]
        super().teardown()

    def _ends_by_itself(self) -> bool:
        kwargs = self._work_kwargs or {}
        return bool(kwargs.get("burst") or kwargs.get("max_jobs") or kwargs.get("max_idle_time"))
