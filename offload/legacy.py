"""Function paths stored in Redis by releases before the ``offload`` package, and where they live now.

Jobs keep the import paths of their function and callbacks in Redis for as long as they live
(a newsletter's mails: up to ``NEWSLETTER_TTL``, 14 days). Task functions did not move
(``tasks.crunch_numbers`` is still the reference app's ``tasks.crunch_numbers``); the
newsletter's failure callbacks did. The worker's job class reads every stored path through
:func:`current_path`, so such jobs keep working. Remove an entry once no job can hold it
(its release is older than the longest TTL).
"""

from __future__ import annotations

from typing import Any

from rq.job import Job

MOVED: dict[str, str] = {
    "newsletter.on_mail_failed": "offload.workloads.newsletter.on_mail_failed",
    "newsletter.on_mail_stopped": "offload.workloads.newsletter.on_mail_stopped",
}
"""Old import path -> new import path."""


def current_path(path: str) -> str:
    """Return where the function stored as ``path`` lives now."""
    return MOVED.get(path, path)


class CurrentPathsJob(Job):
    """RQ's job, reading the callback paths an earlier release stored as they are now."""

    def restore(self, raw_data: Any) -> None:
        super().restore(raw_data)
        # RQ keeps each callback's path in a private attribute and imports it when it runs.
        for name in ("_success_callback_name", "_failure_callback_name", "_stopped_callback_name"):
            path = getattr(self, name, None)
            if path:
                setattr(self, name, current_path(path))
