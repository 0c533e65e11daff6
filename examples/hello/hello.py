"""Offload's smallest app: one task, a route that submits it, a route that reads it back (examples/README.md)."""

import os
from typing import Annotated

from flask import Flask, current_app, request
from pydantic import Field

from offload import InvalidParams, Offload

app = Flask(__name__)
app.config["OFFLOAD_REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
app.config["GREETING"] = os.environ.get("GREETING", "Hello")
offload = Offload(app)


@offload.task(title="Greet someone")
def greet(name: Annotated[str, Field(min_length=1, max_length=100)], times: Annotated[int, Field(ge=1, le=5)] = 1):
    """Runs on a worker, inside this app's context: current_app is this app."""
    return " ".join([f"{current_app.config['GREETING']}, {name}!"] * times)


@app.post("/greetings")
def submit_greeting():
    try:
        job = offload.submit("greet", request.get_json(silent=True) or {})
    except InvalidParams as exc:
        return {"error": str(exc), "fields": exc.fields}, 400
    return {"id": job.id, "url": f"/greetings/{job.id}"}, 202


@app.get("/greetings/<job_id>")
def read_greeting(job_id: str):
    job = offload.fetch(job_id)
    if job is None:
        return {"error": "no such job"}, 404
    return {"id": job.id, "status": job.get_status(), "result": job.return_value()}
