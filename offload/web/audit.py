"""The operator log: who did what to which jobs, when, and to how many.

Every operator action (bulk or single, pause, quiet, stop) is written here and to the
``offload`` logger. The entries live in one Redis list, newest first, trimmed to
:data:`KEEP` entries (a few hundred bytes each), so every web process sees the same log.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import current_app, request

from offload.state import get_redis

log = logging.getLogger("offload")

KEY = "offload:operator-log"
KEEP = 1000


def record(action: str, count: int, **details: Any) -> dict[str, Any]:
    """Write one entry for ``action`` done to ``count`` jobs (queues, workers) by this request's operator."""
    entry = {
        "at": time.time(),
        "who": current_app.config["OFFLOAD_OPERATOR_USERNAME"],
        "from": request.remote_addr,
        "action": action,
        "count": count,
        "details": {name: value for name, value in details.items() if value not in (None, "", {}, [])},
    }
    with get_redis().pipeline() as pipe:
        pipe.lpush(KEY, json.dumps(entry))
        pipe.ltrim(KEY, 0, KEEP - 1)
        pipe.execute()
    log.info("Operator %s from %s: %s, %d affected %s", entry["who"], entry["from"], action, count, entry["details"])
    return entry


def entries(limit: int = 200) -> list[dict[str, Any]]:
    """Return the newest ``limit`` entries, newest first."""
    return [json.loads(raw) for raw in get_redis().lrange(KEY, 0, limit - 1)]
