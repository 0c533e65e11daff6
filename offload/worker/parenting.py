"""A forked child tied to its parent: it dies with it, the parent's reads of it are not cut
short by RQ's monitoring alarm (jobprocess.py), and a flag the child sets the parent sees at once."""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any


def die_with_parent(parent_pid: int) -> None:
    """Have Linux SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``)."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


@contextlib.contextmanager
def alarm_deferred() -> Iterator[None]:
    """Hold back SIGALRM's handler (RQ's monitor raises from it) for the block; run it after.

    Not a signal mask: the signal goes to any thread that does not block it (the pubsub
    thread), and Python runs handlers in the main thread whichever thread received it. Call it
    from the main thread."""
    came: list[tuple[int, Any]] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: came.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGALRM, previous)
        if came and callable(previous):
            previous(*came[0])


class SharedFlag:
    """A flag that a process and the children it forks afterwards share: one byte of anonymous
    ``MAP_SHARED`` memory, read and written without a system call."""

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, 1)

    def set(self, on: bool) -> None:
        self._memory[0] = 1 if on else 0

    def is_set(self) -> bool:
        return self._memory[0] == 1
