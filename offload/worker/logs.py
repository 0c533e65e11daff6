"""How a worker's logs read: ``logging_config(redis_url)`` is a ``DICT_CONFIG`` for ``rq worker -c``."""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions

from offload.connection import redact
from offload.redis_hygiene import UnsafeRedis


class RedisUnreachableFilter(logging.Filter):
    """Turn ``rq worker``'s start-up connection error into one line that names Redis.

    The CLI logs a failed first connection as the bare exception ("Error 111 connecting to
    127.0.0.1:6379. Connection refused.", or a traceback for a timeout) and exits 1. This
    keeps the exit code and says what is wrong and where, without the password.
    """

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        self.redis_url = redis_url

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, UnsafeRedis):  # OFFLOAD_REQUIRE_SAFE_REDIS: its message is the one line
            record.msg, record.args, record.exc_info, record.exc_text = str(record.msg), None, None, None
        elif isinstance(record.msg, redis.exceptions.RedisError):
            record.msg = (
                f"Redis at {redact(self.redis_url)} is unreachable ({record.msg}); "
                "the worker exits 1 (is Redis running, and is REDIS_URL right?)"
            )
            record.args = None
            record.exc_info = record.exc_text = None
        return True


def logging_config(redis_url: str) -> dict[str, Any]:
    """Return the worker's ``logging.config.dictConfig``: one plain line per record, Redis errors named."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "filters": {"redis_unreachable": {"()": f"{__name__}.RedisUnreachableFilter", "redis_url": redis_url}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redis_unreachable"]}
        },
        "root": {"handlers": ["console"], "level": "INFO"},
        # fontTools logs a line per table of every font it subsets into a PDF.
        "loggers": {"fontTools": {"level": "WARNING"}},
    }
