"""Newsletters: one ``send_newsletter`` job per recipient under one batch, each mailed once.

The web side reads the recipients (:func:`read_recipients`), checks the whole submission
(:func:`check_newsletter`) and enqueues the batch in one Redis transaction
(:func:`submit_batch`); the batch page reads :func:`batch_view`. The worker side is
:func:`deliver` (the body of ``tasks.send_newsletter``) and the failure callbacks.

What Redis holds per batch, all expiring together at the batch's ``expires_at``:

- ``offload:newsletter:<id>``           hash: subject, body, sender, total, created_at, send_at, expires_at
- ``offload:newsletter:<id>:delivered`` hash: recipient → when the server accepted the mail and its reply
- ``offload:newsletter:<id>:failed``    hash: recipient → why it failed for good
- ``rq:group:<id>``                     RQ's group: the ids of the batch's jobs

A delivery is recorded (HSETNX, so once) the moment the server answers 250 to DATA, and
checked before every attempt: a job retried after that point does not mail again.
"""

from __future__ import annotations

import csv
import io
import json
import time
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from itertools import islice
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from redis import Redis
from rq import Callback, Queue, Retry, get_current_job
from rq.group import Group
from rq.job import Job

from offload.retries import PermanentError, RetryLater, jittered
from offload.state import get_task

TASK = "send_newsletter"
KEY_PREFIX = "offload:newsletter:"
INDEX_KEY = "offload:newsletters"
"""Sorted set of batch ids by creation time: the batch list, and what the nightly cleanup prunes."""

FAILURES_SHOWN = 200
"""Most failures the batch page and its JSON list (the counts cover all of them)."""

INVALID_SHOWN = 100
"""Most invalid addresses listed back on a refused form (the count covers all of them)."""


def batch_key(batch_id: str) -> str:
    return f"{KEY_PREFIX}{batch_id}"


def delivered_key(batch_id: str) -> str:
    return f"{KEY_PREFIX}{batch_id}:delivered"


def failed_key(batch_id: str) -> str:
    return f"{KEY_PREFIX}{batch_id}:failed"


# Set the flag only on a batch that still exists: HSETNX alone would make a new hash, without
# the batch's TTL, when the batch expired since it was read (and its index entry would stay).
_MARK_CANCELED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HSETNX', KEYS[1], 'canceled_at', ARGV[1])
"""


def mark_canceled(redis: Redis, batch_id: str, at: int) -> bool:
    """Flag the batch canceled at ``at`` (the first flag stays); False if the batch no longer exists."""
    return int(redis.eval(_MARK_CANCELED, 1, batch_key(batch_id), at)) >= 0


# --------------------------------------------------------------------------- reading the form


@dataclass
class Recipients:
    """The addresses a user gave: the valid ones once each (first spelling kept), and the rest."""

    valid: list[str] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (what was given, why it is wrong)
    duplicates: int = 0

    def add(self, entry: str, seen: set[str]) -> None:
        entry = entry.strip()
        if not entry:
            return
        try:
            # No DNS lookups: a form must answer fast, and the mail server judges deliverability.
            checked = validate_email(entry, check_deliverability=False, allow_smtputf8=False)
            # An internationalized domain in its ASCII form (IDNA): SMTP's envelope is ASCII.
            address = checked.ascii_email or checked.normalized
        except EmailNotValidError as exc:
            self.invalid.append((entry[:320], str(exc)))
            return
        if address.casefold() in seen:
            self.duplicates += 1
            return
        seen.add(address.casefold())
        self.valid.append(address)


def read_recipients(text: str, csv_data: bytes | None = None) -> Recipients:
    """Read addresses from pasted text (one per line, or separated by commas or semicolons)
    and from a CSV file (its ``email`` column if it has a header naming one, else its first)."""
    recipients, seen = Recipients(), set[str]()
    for line in text.splitlines():
        for entry in line.replace(";", ",").split(","):
            recipients.add(entry, seen)
    for entry in _csv_entries(csv_data or b""):
        recipients.add(entry, seen)
    return recipients


def _csv_entries(data: bytes) -> Iterable[str]:
    if not data.strip():
        return []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("The CSV file is not UTF-8 text: save it as CSV UTF-8.") from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    except csv.Error as exc:  # e.g. a bare carriage return inside a field
        raise ValueError(f"The CSV file cannot be read ({exc}).") from None
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    for name in ("email", "e-mail", "email address", "address"):
        if name in header:
            column = header.index(name)
            return [row[column] for row in rows[1:] if len(row) > column]
    return [row[0] for row in rows]


HEADER_BREAKERS = frozenset({"Cc", "Zl", "Zp"})
"""Unicode categories a mail header must not hold: control characters (``\\r``, ``\\n``, ``\\x0b``,
U+0085...) and the line and paragraph separators (U+2028, U+2029). Python's email package
folds or refuses a header holding one, so every mail of the batch would fail."""


def one_line(text: str) -> str:
    """Return ``text`` if it can be a mail header's value; else raise naming the first character that cannot."""
    for char in text:
        if unicodedata.category(char) in HEADER_BREAKERS:
            raise ValueError(f"must be one line of text, without control characters (it holds U+{ord(char):04X})")
    return text


class NewsletterText(BaseModel):
    """The subject and text of a newsletter, as the form and the API give them."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    subject: Annotated[str, Field(min_length=1, max_length=200, title="Subject"), AfterValidator(one_line)]
    body: Annotated[str, Field(min_length=1, max_length=100_000, title="Text")]


@dataclass
class Submission:
    """A checked newsletter: what to send and to whom, or the errors by field."""

    text: NewsletterText | None
    recipients: Recipients
    errors: dict[str, str]


def check_newsletter(
    values: Mapping[str, Any],
    recipients: Recipients,
    max_recipients: int,
    skip_invalid: bool = False,
    json_client: bool = False,
) -> Submission:
    """Check subject, body and recipients; ``errors`` maps each wrong field to a message, worded for
    the form, or for a JSON client (``json_client``: its fields and keys, not the page's)."""
    errors: dict[str, str] = {}
    text = None
    try:
        text = NewsletterText.model_validate({key: values[key] for key in ("subject", "body") if key in values})
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            errors.setdefault(".".join(str(part) for part in error["loc"]), error["msg"])
    if recipients.invalid and not skip_invalid:
        count = len(recipients.invalid)
        them = "them" if count > 1 else "it"
        remedy = (
            f'(see "invalid_recipients"), or send "skip_invalid": true to skip {them}.'
            if json_client
            else "(listed below), or choose to skip invalid addresses."
        )
        errors["recipients"] = (
            f"{count} address{'es are' if count > 1 else ' is'} not valid; fix or remove {them} {remedy}"
        )
    elif not recipients.valid:
        errors["recipients"] = "Give at least one valid address."
    elif len(recipients.valid) > max_recipients:
        errors["recipients"] = (
            f"{len(recipients.valid):,} distinct addresses is more than the {max_recipients:,} a newsletter may have."
        )
    return Submission(text=text if not errors else None, recipients=recipients, errors=errors)


# --------------------------------------------------------------------------- submitting


def queue_name() -> str:
    """The queue newsletter jobs go to (the task's)."""
    task = get_task(TASK)
    assert task is not None
    return task.queue


def submit_batch(
    queue: Queue,
    text: NewsletterText,
    recipients: list[str],
    *,
    config: Mapping[str, Any],
    run_at: datetime | None = None,
    retry: Retry | None = None,
) -> str:
    """Store the newsletter and enqueue one job per recipient, all in one transaction; return the batch id.

    With ``run_at`` the jobs are scheduled for that time instead of queued now. ``retry``
    defaults to the task's policy, the same for every job: the jitter that keeps a batch a
    server turned away from coming back all at once is drawn when a mail fails (:func:`deliver`).
    """
    task = get_task(TASK)
    assert task is not None
    redis: Redis = queue.connection
    batch_id = uuid.uuid4().hex
    now = time.time()
    delay = max(0, int(run_at.timestamp() - now)) if run_at else 0
    expires_at = int(now) + delay + config["OFFLOAD_NEWSLETTER_TTL"]
    common = {
        "timeout": task.timeout,
        "result_ttl": task.result_ttl if task.result_ttl is not None else config["OFFLOAD_RESULT_TTL"],
        "failure_ttl": config["OFFLOAD_FAILURE_TTL"],
        "ttl": config["OFFLOAD_JOB_TTL"] + delay,  # a scheduled job must outlive its wait
        "description": task.title,
        "on_failure": Callback(f"{__name__}.on_mail_failed"),
        "on_stopped": Callback(f"{__name__}.on_mail_stopped"),
        "retry": retry or task.retry,
    }
    jobs = [
        {
            "kwargs": {"batch_id": batch_id, "to": address},
            "meta": {"task": TASK, "progress": 0, "batch": batch_id},
            **common,
        }
        for address in recipients
    ]
    group = Group(redis, name=batch_id)
    with redis.pipeline() as pipe:
        pipe.hset(
            batch_key(batch_id),
            mapping={
                "subject": text.subject,
                "body": text.body,
                "sender": config["OFFLOAD_NEWSLETTER_FROM"],
                "total": len(recipients),
                "created_at": int(now),
                "send_at": int(now) + delay,
                "expires_at": expires_at,
                "queue": queue.name,
            },
        )
        pipe.expireat(batch_key(batch_id), expires_at)
        pipe.zadd(INDEX_KEY, {batch_id: now})
        if run_at is None:
            datas = [Queue.prepare_data(task.path, **options) for options in jobs]
            group.enqueue_many(queue, datas, pipeline=pipe)  # executes the pipeline
        else:
            scheduled = [queue.create_job(task.path, group_id=batch_id, **options) for options in jobs]
            for job in scheduled:
                queue.schedule_job(job, run_at, pipeline=pipe)
            # Group.enqueue_many has no scheduled form: add the jobs to the group as it does.
            pipe.sadd(Group.get_key(batch_id), *[job.id for job in scheduled])
            pipe.sadd(Group.REDIS_GROUP_KEY, batch_id)
            pipe.execute()
    return batch_id


# --------------------------------------------------------------------------- reading a batch


def batch_view(redis: Redis, batch_id: str, failures_shown: int = FAILURES_SHOWN) -> dict[str, Any] | None:
    """Return the batch's counts and failures as JSON values, or None if it is unknown or expired."""
    if len(batch_id) != 32 or not all(c in "0123456789abcdef" for c in batch_id):
        return None
    with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(batch_key(batch_id), "subject", "total", "created_at", "send_at", "canceled_at")
        pipe.hlen(delivered_key(batch_id))
        pipe.hlen(failed_key(batch_id))
        (subject, total, created_at, send_at, canceled_at), sent, failed = pipe.execute()
    if subject is None:
        return None
    total, failed_list = int(total), []
    for recipient, raw in islice(redis.hscan_iter(failed_key(batch_id), count=500), failures_shown):
        record = json.loads(raw)
        failed_list.append({"to": recipient.decode(), **record})
    failed_list.sort(key=lambda failure: failure["to"])
    pending = max(0, total - sent - failed)
    canceled = pending if canceled_at else 0
    pending -= canceled
    return {
        "id": batch_id,
        "subject": subject.decode(),
        "total": total,
        "sent": sent,
        "failed": failed,
        "pending": pending,
        "canceled": canceled,
        "done": pending == 0,
        "created_at": _iso(int(created_at)),
        "send_at": _iso(int(send_at)),
        "canceled_at": _iso(int(canceled_at)) if canceled_at else None,
        "failures": failed_list,
        "failures_shown": len(failed_list),
    }


def _iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- on the worker


def deliver(batch_id: str, to: str) -> dict[str, Any]:
    """Mail the batch's newsletter to ``to`` once: skip it if the server already accepted it."""
    from flask import current_app

    from offload.workloads import mailer

    job = get_current_job()
    redis: Redis = job.connection if job else current_app.extensions["offload"].redis
    batch = {key.decode(): value.decode() for key, value in redis.hgetall(batch_key(batch_id)).items()}
    if not batch:
        raise PermanentError("the newsletter expired before this mail was sent")
    if "canceled_at" in batch:
        return {"to": to, "skipped": "the newsletter was canceled"}
    accepted = redis.hget(delivered_key(batch_id), to)
    if accepted is not None:
        return {"to": to, "already_delivered": True, **json.loads(accepted)}

    config = current_app.config
    smtp = mailer.SmtpConfig.from_url(
        config["OFFLOAD_SMTP_URL"], config["OFFLOAD_SMTP_TIMEOUT"], config["OFFLOAD_SMTP_CA_FILE"]
    )
    message = EmailMessage()
    message["From"] = batch["sender"]
    message["To"] = Address(addr_spec=to)
    message["Subject"] = batch["subject"]
    message["Date"] = format_datetime(datetime.now(UTC))
    # The same id on every attempt: should the window in README ever resend, clients can tell.
    domain = parseaddr(batch["sender"])[1].rpartition("@")[2] or "offload.invalid"
    message["Message-ID"] = f"<{batch_id}.{uuid.uuid5(uuid.NAMESPACE_URL, to).hex}@{domain}>"
    message.set_content(batch["body"])

    def record(reply: str) -> None:
        record_delivery(redis, batch_id, to, reply, int(batch["expires_at"]))

    try:
        reply = mailer.send(smtp, message, on_accepted=record)
    except mailer.TransientMailError as exc:
        # Retry after the policy's interval for this attempt, give or take 20% (retries.py).
        interval = job.get_retry_interval() if job is not None and job.retries_left else 0
        raise RetryLater(str(exc), jittered(interval)) from exc
    return {"to": to, "already_delivered": False, "reply": reply}


def record_delivery(redis: Redis, batch_id: str, to: str, reply: str, expires_at: int) -> bool:
    """Record that the server accepted the mail to ``to``; False if it was already recorded."""
    record = json.dumps({"accepted_at": _iso(int(time.time())), "reply": reply[:300]})
    with redis.pipeline() as pipe:
        pipe.hsetnx(delivered_key(batch_id), to, record)
        pipe.expireat(delivered_key(batch_id), expires_at)
        pipe.hdel(failed_key(batch_id), to)  # a requeued failure that now went through
        first, *_ = pipe.execute()
    return bool(first)


def record_failure(redis: Redis, job: Job, reason: str) -> None:
    """Record that the mail of ``job`` failed for good, with the reason the batch page shows."""
    batch_id, to = job.kwargs["batch_id"], job.kwargs["to"]
    expires_at = redis.hget(batch_key(batch_id), "expires_at")
    if expires_at is None or redis.hexists(delivered_key(batch_id), to):
        return
    record = json.dumps({"reason": reason[:500], "job_id": job.id, "failed_at": _iso(int(time.time()))})
    with redis.pipeline() as pipe:
        pipe.hset(failed_key(batch_id), to, record)
        pipe.expireat(failed_key(batch_id), int(expires_at))
        pipe.execute()


def on_mail_failed(job: Job, connection: Redis, exc_type, exc_value, traceback) -> None:
    """RQ failure callback: runs after every failed attempt; records the last one."""
    from rq.exceptions import AbandonedJobError
    from rq.timeouts import JobTimeoutException

    if not isinstance(exc_value, PermanentError) and job.should_retry:
        return  # RQ retries it
    if isinstance(exc_value, JobTimeoutException):
        reason = f"timed out after {job.timeout} s"
    elif isinstance(exc_value, AbandonedJobError):
        reason = "the worker stopped while sending; the mail may or may not have gone out"
    else:
        reason = str(exc_value) or (exc_type.__name__ if exc_type else "failed")
    record_failure(connection, job, reason)


def on_mail_stopped(job: Job, connection: Redis) -> None:
    """RQ stopped callback: an operator stopped this mail's job."""
    record_failure(connection, job, "stopped by an operator")
