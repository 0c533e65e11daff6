"""Settings for the stock ``rq worker`` command, read with ``-c worker``::

    rq worker -c worker -w offload.worker.OffloadWorker --with-scheduler

RQ reads ``REDIS_URL``, ``QUEUES`` and ``DICT_CONFIG`` here; they come from the same
environment as the web app (``offload.settings.from_environ``), read by
``offload.worker.rqconfig``, which on-demand workers name directly. The worker runs every job
inside the reference app (``OFFLOAD_APP``, by default ``app:app``: the app ``app.py`` builds
when imported, so it is built once, not again by its factory), whose tasks are
those of ``tasks.py``. ``flask --app app offload worker`` does the same in one command.
"""

from __future__ import annotations

import os

from offload import settings
from offload.settings import APP_ENV
from offload.worker.rqconfig import DICT_CONFIG, QUEUES, REDIS_URL

__all__ = ["DICT_CONFIG", "QUEUES", "REDIS_URL"]

os.environ.setdefault(APP_ENV, "app:app")

# The reference app takes its SECRET_KEY from the environment only: a production worker without
# one (or with a weak one) refuses here, in one line, before rq connects to Redis. rqconfig leaves
# that check to the app the worker loads, since another host app may set its key in code.
settings.from_environ()
