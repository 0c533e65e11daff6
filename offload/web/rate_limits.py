"""Rate limits (Flask-Limiter), counted in the app's own Redis so every web process shares them.

Views take a limit with ``@limiter.limit("5 per minute")``. The module is not called
``limits.py``: that name would shadow the ``limits`` package Flask-Limiter is built on.

Offload's limiter enforces only the limits its own views name. A host app's Flask-Limiter reads
the same ``RATELIMIT_*`` settings: its default and application limits (``RATELIMIT_DEFAULT``,
``RATELIMIT_APPLICATION``) are its own limiter's to apply, with its own exemptions, never
counted a second time by Offload's.
"""

from __future__ import annotations

from flask import Flask
from flask_limiter import Limiter

from offload.connection import connection_pool
from offload.web.client_identity import client_key


def _always_exempt() -> bool:
    return True


# Keyed by client (an IPv4 address or an IPv6 /64, as a trusted proxy reports it): client_identity.py.
# Default and application limits (a host's RATELIMIT_DEFAULT, RATELIMIT_APPLICATION) are exempt.
limiter = Limiter(
    key_func=client_key, default_limits_exempt_when=_always_exempt, application_limits_exempt_when=_always_exempt
)


def init_app(app: Flask) -> None:
    """Count ``app``'s limits in its Redis (``REDIS_URL``), giving up after ``REDIS_QUICK_TIMEOUT``
    (a counter is one small script: a frozen Redis must not hold the request for long)."""
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["OFFLOAD_REDIS_URL"])
    app.config.setdefault(
        "RATELIMIT_STORAGE_OPTIONS",
        {"connection_pool": connection_pool(app.config, app.config["OFFLOAD_REDIS_QUICK_TIMEOUT"])},
    )
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "offload")
    # Stated for every app: `limiter` is shared, and init_app would carry one app's switch to the next.
    app.config.setdefault("RATELIMIT_ENABLED", True)
    # Redis down: count in this process's memory meanwhile, rather than fail the request.
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    limiter.init_app(app)
