"""Fewer round trips: RQ's loop writes the worker's heartbeat (3 commands, one round trip each)
four times and its state twice per job. A heartbeat that would move the expiry by less than a
quarter of the TTL (at most a minute) is skipped, the three commands go in one round trip, and a
state already written is not written again. Both wait out Redis (outages.py)."""

from __future__ import annotations

import time

from offload.worker.base import WorkerBase


class RoundTrips(WorkerBase):
    """Worker mixin: batched, skipped-when-redundant heartbeats and state writes."""

    _heartbeat_expires_at: float = 0.0

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        timeout = timeout or self.worker_ttl + 60
        expires_at = time.monotonic() + timeout
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
        else:
            if expires_at - self._heartbeat_expires_at < min(timeout / 4, 60):
                return
            send = super().heartbeat

            def batched() -> None:
                with self.connection.pipeline(transaction=False) as batch:
                    send(timeout, pipeline=batch)
                    batch.execute()

            self._until_redis_answers("sending a heartbeat", batched)
        self._heartbeat_expires_at = expires_at

    def set_state(self, state: str, pipeline=None) -> None:
        if pipeline is not None:
            return super().set_state(state, pipeline=pipeline)
        if state == self._state:
            return None
        return self._until_redis_answers(f"setting state {state}", super().set_state, state)
