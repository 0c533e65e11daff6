"""Who may submit which task, and read which job: the task's ``access`` level against the visitor's.

Offload's only account is the operator (auth.py), so a visitor is either anonymous (public) or
the logged-in operator, who is also the "signed-in user" that ``access="user"`` tasks ask for.
Submitting above one's level is refused before anything is enqueued: 401 to an anonymous
visitor (log in first), 403 to a signed-in one; JSON on the API, the error page for forms
(opening such a form sends an anonymous visitor to the login, and back). A job
of a task above the visitor's level reads as absent (404), as does a job of no registered task
(unless its function is in ``UNREGISTERED_JOB_MODULES``) for anyone but the operator: its id may
be predictable (periodic jobs), its data is not theirs to see. Canceling a job asks the same
first: a job's submitter is known only by the ids in the session cookie (mine.py), which anyone
holding ``SECRET_KEY`` can forge, so "I submitted it" never stands in for "I may read it".
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import abort, current_app, redirect, request, url_for
from rq.job import Job

from offload.jobs import fetch_job
from offload.registry import Access, Task
from offload.state import get_task
from offload.web import mine
from offload.web.auth import is_operator


def visitor_access() -> Access:
    """Return the level of this request's visitor: operator when logged in, else public."""
    return Access.OPERATOR if is_operator() else Access.PUBLIC


def may_submit(task: Task | str) -> bool:
    """Return True if this request's visitor may submit ``task`` (a task, or a task's name)."""
    found = get_task(task) if isinstance(task, str) else task
    return found is not None and found.access.allows(visitor_access())


def submittable(tasks: Iterable[Task]) -> list[Task]:
    """Return the tasks of ``tasks`` this request's visitor may submit, in order."""
    level = visitor_access()
    return [task for task in tasks if task.access.allows(level)]


def require_submit(task: Task | str) -> None:
    """Refuse (401 anonymous, 403 signed in) unless this request's visitor may submit ``task``
    (a task, or a task's name: 404 when no task has it)."""
    if isinstance(task, str):
        found = get_task(task)
        if found is None:
            abort(404, f"There is no task called {task[:100]!r}.")
        task = found
    if may_submit(task):
        return
    who = "the operator" if task.access is Access.OPERATOR else "signed-in users"
    if visitor_access() is Access.PUBLIC and request.method == "GET" and request.blueprint != "api":
        # Opening a form one may not use: the login, and back to the form.
        abort(redirect(url_for("auth.login", next=request.full_path.rstrip("?"))))
    if visitor_access() is Access.PUBLIC:
        where = f" ({url_for('auth.login')})" if "auth" in current_app.blueprints else ""
        abort(401, f"{task.title} is for {who} only: log in first{where}. Nothing was started.")
    abort(403, f"{task.title} is for {who} only. Nothing was started.")


def may_read(job: Job) -> bool:
    """Return True if this request's visitor may read ``job`` (its page, API view, files)."""
    task = get_task((job.meta or {}).get("task", ""))
    level = visitor_access()
    if task is not None:
        return task.access.allows(level)
    # A function the app lets run without registering it (UNREGISTERED_JOB_MODULES; the tests'
    # fixtures) is as public as a task that declares nothing; anything else is the operator's.
    modules = current_app.config["OFFLOAD_UNREGISTERED_JOB_MODULES"]
    function = job.func_name or ""
    return level is Access.OPERATOR or any(function.startswith(module + ".") for module in modules)


def readable_job(job_id: str) -> Job:
    """Return the job ``job_id`` if this request's visitor may read it, else answer 404: a job
    they may not read looks exactly like one that does not exist."""
    job = fetch_job(job_id)
    if job is None or not may_read(job):
        abort(404, "No such job: it never existed or its result has expired.")
    return job


def cancelable_job(job_id: str) -> Job:
    """Return the job ``job_id`` if this request's visitor may cancel it, else abort: 404 unless
    they may read it (:func:`readable_job`), 403 unless they submitted it (its id is in their
    session) or are the operator. The one check for every submitter's cancel (the job page's
    button, ``DELETE /api/jobs/<id>``): the page's used to ask only the session, so a forged one
    listing an operator's job canceled it."""
    job = readable_job(job_id)
    if not is_operator() and not mine.submitted(job.id):
        abort(
            403, "Only the browser or client that started this job (its session cookie), or an operator, can cancel it."
        )
    return job
