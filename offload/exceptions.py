"""The errors Offload raises to the code that uses it."""

from __future__ import annotations


class OffloadError(Exception):
    """Base of every error below."""


class UnknownTask(OffloadError, LookupError):
    """No task is registered under the name given."""

    def __init__(self, name: str) -> None:
        super().__init__(f"there is no task called {name!r}")
        self.name = name


class InvalidParams(OffloadError, ValueError):
    """A task's parameters did not validate; ``fields`` maps each bad field to what is wrong."""

    def __init__(self, task: str, fields: dict[str, str]) -> None:
        listed = "; ".join(f"{name}: {message}" for name, message in fields.items())
        super().__init__(f"invalid parameters for task {task!r}: {listed}")
        self.task = task
        self.fields = fields
