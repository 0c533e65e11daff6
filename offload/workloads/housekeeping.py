"""The work of the periodic jobs (``periodic.py`` says when): the nightly cleanup and the hourly digest.

Job data, results, delivery records and batches expire by their own TTLs; what does not
expire by itself is the bookkeeping that points at them, which the cleanup prunes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from redis import Redis
from rq import Queue
from rq.group import Group
from rq.job import Job
from rq.registry import clean_registries
from rq.serializers import JSONSerializer

from offload.settings import all_queue_names
from offload.workloads import newsletter

DIGESTS_KEY = "offload:digests"
"""List of the latest digests as JSON, newest first."""

DIGESTS_KEPT = 48


def cleanup_expired(redis: Redis, queue_names: list[str]) -> dict[str, int]:
    """Drop index entries of expired newsletters and groups, and clean RQ's registries of ``queue_names``
    (every queue: ``settings.all_queue_names``, on-demand ones included); return the counts."""
    batch_ids = [raw.decode() for raw in redis.zrange(newsletter.INDEX_KEY, 0, -1)]
    with redis.pipeline(transaction=False) as pipe:
        for batch_id in batch_ids:
            pipe.exists(newsletter.batch_key(batch_id))
        alive = pipe.execute()
    expired = [batch_id for batch_id, exists in zip(batch_ids, alive, strict=True) if not exists]
    if expired:
        redis.zrem(newsletter.INDEX_KEY, *expired)
    groups_before = redis.scard(Group.REDIS_GROUP_KEY)
    Group.clean_registries(redis)
    for name in queue_names:
        clean_registries(Queue(name, connection=redis, serializer=JSONSerializer))
    return {
        "newsletters_pruned": len(expired),
        "newsletters_kept": len(batch_ids) - len(expired),
        "groups_pruned": groups_before - redis.scard(Group.REDIS_GROUP_KEY),
    }


def hourly_digest(redis: Redis, config: Mapping[str, Any], hours: int, job_id: str | None) -> dict[str, Any]:
    """Count the jobs that ended and the newsletters sent in the last ``hours``; store it, mail it if asked."""
    end = time.time()
    start = end - hours * 3600
    counts: dict[str, Counter[str]] = {}
    for name in all_queue_names(config):  # the on-demand queues' jobs end too
        queue = Queue(name, connection=redis, serializer=JSONSerializer)
        for status, registry in (("finished", queue.finished_job_registry), ("failed", queue.failed_job_registry)):
            ids = registry.get_job_ids()
            for offset in range(0, len(ids), 500):
                for job in Job.fetch_many(ids[offset : offset + 500], connection=redis, serializer=JSONSerializer):
                    if job is None:
                        continue
                    ended = job.ended_at.replace(tzinfo=UTC).timestamp() if job and job.ended_at else None
                    if ended is not None and start <= ended <= end:
                        task = str((job.meta or {}).get("task") or job.func_name)
                        counts.setdefault(task, Counter())[status] += 1
    # Totals only: anyone may run the digest from its form, and a batch id opens its recipient list.
    newsletters: Counter[str] = Counter()
    for raw in redis.zrangebyscore(newsletter.INDEX_KEY, start, end):
        batch = newsletter.batch_view(redis, raw.decode(), failures_shown=0)
        if batch:
            newsletters.update(newsletters=1, mails=batch["total"], sent=batch["sent"], failed=batch["failed"])
    digest = {
        "job_id": job_id,
        "window_start": _iso(start),
        "window_end": _iso(end),
        "jobs": {task: dict(counter) for task, counter in sorted(counts.items())},
        "newsletters": {key: newsletters[key] for key in ("newsletters", "mails", "sent", "failed")},
    }
    with redis.pipeline() as pipe:
        pipe.lpush(DIGESTS_KEY, json.dumps(digest))
        pipe.ltrim(DIGESTS_KEY, 0, DIGESTS_KEPT - 1)
        pipe.execute()
    if config["OFFLOAD_DIGEST_TO"]:
        digest["mailed_to"] = config["OFFLOAD_DIGEST_TO"]
        _mail(config, digest)
    return digest


def _mail(config: Mapping[str, Any], digest: dict[str, Any]) -> None:
    from offload.workloads import mailer

    lines = [f"Jobs that ended between {digest['window_start']} and {digest['window_end']}:", ""]
    for task, counts in digest["jobs"].items() or [("(none)", {})]:
        lines.append(f"  {task}: {counts.get('finished', 0)} finished, {counts.get('failed', 0)} failed")
    totals = digest["newsletters"]
    lines.append(
        f"Newsletters submitted: {totals['newsletters']}, {totals['sent']}/{totals['mails']} mails sent, "
        f"{totals['failed']} failed"
    )
    message = EmailMessage()
    message["From"] = config["OFFLOAD_NEWSLETTER_FROM"]
    message["To"] = config["OFFLOAD_DIGEST_TO"]
    message["Subject"] = f"Offload digest, {digest['window_end']}"
    message.set_content("\n".join(lines) + "\n")
    smtp = mailer.SmtpConfig.from_url(
        config["OFFLOAD_SMTP_URL"], config["OFFLOAD_SMTP_TIMEOUT"], config["OFFLOAD_SMTP_CA_FILE"]
    )
    mailer.send(smtp, message, on_accepted=lambda reply: None)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
