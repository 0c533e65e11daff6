"""Fewer round trips: RQ's loop writes the worker's heartbeat (3 commands, one round trip each)
four times and its state twice per job. A heartbeat that would move the expiry by less than a
quarter of the TTL (at most a minute) is skipped, the three commands go in one round trip, and a
state already written is not written again. Both wait out Redis (outages.py)."""

from __future__ import annotations

import time


class RoundTrips:
    """Worker mixin: batched, skipped-when-redundant heartbeats and state writes."""

    _heartbeat_expires_at: float = 0.0

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:  # type: ignore[no-untyped-def]
        timeout = timeout or self.worker_ttl + 60  # type: ignore[attr-defined]
        expires_at = time.monotonic() + timeout
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)  # type: ignore[misc]
        else:
            if expires_at - self._heartbeat_expires_at < min(timeout / 4, 60):
                return
            send = super().heartbeat  # type: ignore[misc]

            def batched() -> None:
                with self.connection.pipeline(transaction=False) as batch:  # type: ignore[attr-defined]
                    send(timeout, pipeline=batch)
                    batch.execute()

            self._until_redis_answers("sending a heartbeat", batched)  # type: ignore[attr-defined]
        self._heartbeat_expires_at = expires_at

    def set_state(self, state: str, pipeline=None) -> None:  # type: ignore[no-untyped-def]
        if pipeline is not None:
            return super().set_state(state, pipeline=pipeline)  # type: ignore[misc]
        if state == self._state:  # type: ignore[attr-defined]
            return None
        return self._until_redis_answers(f"setting state {state}", super().set_state, state)  # type: ignore[attr-defined,misc]
