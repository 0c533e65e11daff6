"""When a job runs: now, at a given time (``run_at``) or after a delay (``run_in``).

Forms and the JSON API give the same two optional fields; :func:`parse_when` checks them
against ``SCHEDULE_MAX_AHEAD`` and ``SCHEDULE_PAST_TOLERANCE`` and returns the UTC time to
run at, or None for now. A scheduled job waits in RQ's scheduled registry; the scheduler of
a worker started ``--with-scheduler`` moves it to its queue when it is due.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


class ScheduleError(ValueError):
    """A run_at / run_in value is wrong; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse_when(
    run_at: Any = None,
    run_in: Any = None,
    *,
    max_ahead: int,
    tolerance: int,
    now: datetime | None = None,
) -> datetime | None:
    """Return the UTC time to run at, or None to run now; raise ScheduleError naming the field."""
    now = now or datetime.now(UTC)
    run_at = None if run_at in (None, "") else run_at
    run_in = None if run_in in (None, "") else run_in
    if run_at is not None and run_in is not None:
        raise ScheduleError("run_in", "Give a time (run_at) or a delay (run_in), not both.")
    if run_in is not None:
        seconds = _seconds(run_in)
        if seconds > max_ahead:
            raise ScheduleError("run_in", f"A delay may be at most {max_ahead} s ({_days(max_ahead)}).")
        return now + timedelta(seconds=seconds) if seconds else None
    if run_at is not None:
        moment = _moment(run_at)
        if moment < now - timedelta(seconds=tolerance):
            raise ScheduleError("run_at", "This time is in the past (times are UTC unless they carry an offset).")
        if moment > now + timedelta(seconds=max_ahead):
            raise ScheduleError("run_at", f"A job may be scheduled at most {_days(max_ahead)} ahead.")
        return moment if moment > now else None
    return None


def _seconds(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ScheduleError("run_in", "A delay is a whole number of seconds.")
    try:
        seconds = int(value)
    except ValueError:
        raise ScheduleError("run_in", "A delay is a whole number of seconds.") from None
    if seconds < 0:
        raise ScheduleError("run_in", "A delay cannot be negative.")
    return seconds


def _moment(value: Any) -> datetime:
    """``value`` (an ISO 8601 string, or a datetime from Python callers) in UTC; naive means UTC."""
    if not isinstance(value, str | datetime):
        raise ScheduleError("run_at", "A time is an ISO 8601 string, e.g. 2026-05-01T09:30:00Z.")
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value.strip())
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError:
        raise ScheduleError("run_at", "Not a time: use ISO 8601, e.g. 2026-05-01T09:30:00Z.") from None
    except OverflowError:  # 0001-01-01T00:00:00+23:59 has no UTC time
        raise ScheduleError(
            "run_at", "This time is out of range (its UTC time is before year 1 or after 9999)."
        ) from None


def _days(seconds: int) -> str:
    days = seconds / 86400
    return f"{days:g} day{'s' if days != 1 else ''}" if seconds >= 86400 else f"{seconds} s"
