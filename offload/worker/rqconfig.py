"""Settings for the stock ``rq worker`` command, read with ``-c offload.worker.rqconfig``.

RQ reads ``REDIS_URL``, ``QUEUES`` and ``DICT_CONFIG`` (each log line with its time, level and
logger) here, from the environment as the app reads it (``offload.settings.from_environ``). The
reference app's ``worker.py`` (``-c worker``) is this module plus ``OFFLOAD_APP``'s default; an
on-demand worker (``offload.ondemand.burst_command``) names this module itself, since the host app
it serves need not have a settings module of its own.
"""

from __future__ import annotations

from offload import settings
from offload.worker.logs import logging_config

# Every setting is checked here but SECRET_KEY, which is the host app's (it may set it in code; it
# is checked when the worker loads the app): this module is read before that, by any host app's worker.
_config = settings.from_environ(secret_key_required=False)

REDIS_URL: str = _config.get(settings.key("REDIS_URL"), settings.DEFAULTS["REDIS_URL"])
QUEUES: list[str] = _config.get(settings.key("QUEUES"), list(settings.DEFAULTS["QUEUES"]))
DICT_CONFIG = logging_config(REDIS_URL)
