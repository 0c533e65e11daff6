"""One atomic batch of Redis commands with the redundant ones left out.

RQ's methods each write what they own, so one job's start or end, gathered into a single
transaction or script (roundtrips.py), writes the job's hash three times, the worker's twice,
and sets a TTL that a later command in the same batch sets again. Inside one atomic batch the
outcome is the same with one ``HSET`` per key (later fields win) and only the last ``EXPIRE``
of each key: nothing can read the key in between.
"""

from __future__ import annotations

from typing import Any

Command = tuple[Any, ...]

_NAMES = {b"HSET": "HSET", "HSET": "HSET", b"EXPIRE": "EXPIRE", "EXPIRE": "EXPIRE"}


def _name(command: Command) -> str:
    first = command[0]
    return _NAMES.get(first, "") if isinstance(first, str | bytes) else ""


def coalesce(commands: list[Command]) -> list[Command]:
    """Return ``commands`` (run atomically, in order) with each key's ``HSET``s merged into its
    first, while no other command on that key came between, and every plain ``EXPIRE`` dropped
    that a later one on the same key overrides."""
    last_expire: dict[Any, int] = {}
    for index, command in enumerate(commands):
        if _name(command) == "EXPIRE" and len(command) == 3:
            last_expire[command[1]] = index
    merged: list[Command] = []
    open_hset: dict[Any, int] = {}  # key -> index in merged of an HSET no other command followed
    for index, command in enumerate(commands):
        name = _name(command)
        key = command[1] if len(command) > 1 else None
        if name == "EXPIRE" and len(command) == 3:
            if last_expire[key] == index:
                merged.append(command)  # a TTL leaves the hash's fields alone: an open HSET stays open
            continue
        if name == "HSET" and len(command) % 2 == 0 and key in open_hset:
            at = open_hset[key]
            fields = dict(zip(merged[at][2::2], merged[at][3::2], strict=True))
            fields.update(zip(command[2::2], command[3::2], strict=True))
            merged[at] = (merged[at][0], key, *(item for pair in fields.items() for item in pair))
            continue
        open_hset.pop(key, None)
        if name == "HSET" and len(command) % 2 == 0:
            open_hset[key] = len(merged)
        merged.append(command)
    return merged
