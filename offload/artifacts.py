"""Files a job makes (a PDF, an export), kept next to the job for as long as its result.

Job results are JSON, so bytes cannot live in them: a task saves the file here and returns
its :class:`Artifact` (name, size, content type) as part of its result; the web serves it
back from ``/jobs/<id>/files/<name>``. :class:`ArtifactStore` is the whole interface, so
object storage (S3, Tigris) can replace :class:`RedisArtifactStore` without touching tasks
or routes. Redis keeps files small and short-lived: a size cap, and the job's TTL.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Protocol, cast

from flask import current_app
from redis import Redis

from offload.retries import PermanentError
from offload.state import get_redis

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""File names stores accept: safe in a URL, a Redis key, an object key and Content-Disposition."""


class ArtifactTooLarge(PermanentError):
    """The file is over the store's size cap; a retry would make the same file."""


@dataclass(frozen=True)
class Artifact:
    """What a job result says about a stored file."""

    name: str
    content_type: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ArtifactStore(Protocol):
    """Where job files live. ``ttl`` is in seconds; ``None`` keeps the file until deleted."""

    def save(self, job_id: str, name: str, content_type: str, data: bytes, ttl: int | None) -> Artifact: ...

    def open(self, job_id: str, name: str) -> tuple[Artifact, bytes] | None:
        """Return the file's metadata and bytes, or None if it expired or never existed."""
        ...

    def exists(self, job_id: str, name: str) -> bool: ...


class RedisArtifactStore:
    """Files as Redis hashes (``offload:artifact:<job id>:<name>``), capped at ``max_bytes``."""

    def __init__(self, redis: Redis, max_bytes: int) -> None:
        self.redis = redis
        self.max_bytes = max_bytes

    @staticmethod
    def key(job_id: str, name: str) -> str:
        if not SAFE_NAME.match(name):
            raise ValueError(f"unsafe artifact name {name!r}")
        return f"offload:artifact:{job_id}:{name}"

    def save(self, job_id: str, name: str, content_type: str, data: bytes, ttl: int | None) -> Artifact:
        if len(data) > self.max_bytes:
            raise ArtifactTooLarge(f"{name} is {len(data)} bytes; files are capped at {self.max_bytes} bytes")
        key = self.key(job_id, name)
        artifact = Artifact(name=name, content_type=content_type, size=len(data))
        with self.redis.pipeline() as pipe:  # MULTI: the file never exists without its TTL
            pipe.hset(key, mapping={"data": data, "content_type": content_type})
            if ttl is not None and ttl > 0:
                pipe.expire(key, ttl)
            pipe.execute()
        return artifact

    def open(self, job_id: str, name: str) -> tuple[Artifact, bytes] | None:
        if not SAFE_NAME.match(name):
            return None
        stored = self.redis.hgetall(self.key(job_id, name))
        if not stored:
            return None
        data = cast(bytes, stored[b"data"])
        return Artifact(name=name, content_type=stored[b"content_type"].decode(), size=len(data)), data

    def exists(self, job_id: str, name: str) -> bool:
        return bool(SAFE_NAME.match(name)) and bool(self.redis.exists(self.key(job_id, name)))


def get_store() -> ArtifactStore:
    """Return the current app's artifact store (web and worker alike)."""
    return RedisArtifactStore(get_redis(), max_bytes=current_app.config["OFFLOAD_ARTIFACT_MAX_BYTES"])
