"""The operators' console as one blueprint: register ``console_blueprint`` and the app gets the
operator login (``/login``, ``/logout``) and the operator pages (``/operator/...``: jobs,
queues, dashboard, log, bulk actions), both under the prefix given instead if there is one (a
host app keeps its own ``/login``), and job, queue and worker control and rq-dashboard at
``/rq``, all behind the login."""

from __future__ import annotations

import logging

from flask import Blueprint
from flask.sansio.blueprints import BlueprintSetupState

from offload.web import auth, bulk, control, dashboard, errors, operators
from offload.web.setup import on_register

log = logging.getLogger("offload")

bp = on_register(Blueprint("console", __name__))
for part in (auth.bp, operators.bp, control.bp, bulk.bp):  # registered through this one, on the app itself
    errors.init_blueprint(part)


@bp.record_once
def _register_parts(state: BlueprintSetupState) -> None:
    app = state.app
    app.register_blueprint(auth.bp, url_prefix=state.url_prefix)
    app.register_blueprint(operators.bp, url_prefix=state.url_prefix or operators.URL_PREFIX)
    app.register_blueprint(control.bp)
    app.register_blueprint(bulk.bp, url_prefix=state.url_prefix or operators.URL_PREFIX)
    dashboard.init_app(app)
    if not auth.credentials_configured(app.config):
        log.warning(auth.OFF_MESSAGE)
