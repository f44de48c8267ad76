"""Batches in Redis: one hash per batch (its request, member jobs, refused lines, timestamps, output files) and
a sorted set per tenant for listing. The member jobs are ordinary job records; the batch holds their ids."""
from __future__ import annotations

import time
import uuid
from typing import Any, cast

import orjson
import redis
from gpuq.common import keys
from gpuq.common.errors import NotFound
from gpuq.common.settings import Settings

_JSON = ("metadata", "jobs", "custom_ids", "refused", "requests")


def new_id() -> str:
    """A fresh batch id."""
    return f"batch_{uuid.uuid4().hex}"


class BatchStore:
    """Typed access to batch hashes (another tenant's batch is simply not found)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.r, self.ttl = client, settings.record_ttl_s

    def create(self, batch_id: str, tenant: str, fields: dict[str, Any]) -> None:
        """Store a new batch and list it for its tenant."""
        now = int(time.time())
        pipe = self.r.pipeline()
        encoded = _encode({**fields, "id": batch_id, "tenant": tenant, "created_at": now})
        pipe.hset(keys.openai_batch(batch_id), mapping=cast(Any, encoded))
        pipe.expire(keys.openai_batch(batch_id), self.ttl)
        pipe.zadd(keys.openai_batches(tenant), {batch_id: now})
        pipe.execute()

    def get(self, batch_id: str, tenant: str) -> dict[str, Any]:
        """The batch's fields; 404 when missing or another tenant's."""
        raw = cast(dict[str, str], self.r.hgetall(keys.openai_batch(batch_id))) if batch_id.startswith("batch_") \
            else {}
        if not raw or raw.get("tenant") != tenant:
            raise NotFound(f"batch {batch_id!r} not found", field="batch_id")
        return {k: orjson.loads(v) if k in _JSON else _number(v) for k, v in raw.items()}

    def update(self, batch_id: str, fields: dict[str, Any]) -> None:
        """Write fields of an existing batch."""
        self.r.hset(keys.openai_batch(batch_id), mapping=cast(Any, _encode(fields)))

    def claim(self, batch_id: str, step: str, hold_s: int) -> bool:
        """True for the one caller that may do ``step`` (launch, finalize) now; others wait ``hold_s``."""
        return bool(self.r.set(f"{keys.openai_batch(batch_id)}:{step}", "1", nx=True, ex=hold_s))

    def release(self, batch_id: str, step: str) -> None:
        """Give a claim back early (the step failed and may be tried again at once)."""
        self.r.delete(f"{keys.openai_batch(batch_id)}:{step}")

    def page(self, tenant: str, limit: int, after: str | None) -> tuple[list[str], bool]:
        """Batch ids newest first after ``after``, and whether more follow."""
        ids = cast(list[str], self.r.zrevrange(keys.openai_batches(tenant), 0, -1))
        if after is not None:
            ids = ids[ids.index(after) + 1:] if after in ids else []
        return ids[:limit], len(ids) > limit

    def statuses(self, job_ids: list[str]) -> list[str | None]:
        """Each member job's status (None for an expired record)."""
        pipe = self.r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(keys.job(job_id), "status")
        return cast(list[str | None], pipe.execute())

    def finished(self, job_ids: list[str]) -> list[dict[str, str]]:
        """Each member job's raw hash (status, result, error, timings), for writing the output."""
        pipe = self.r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), ["status", "result", "error", "timings"])
        fields = ("status", "result", "error", "timings")
        return [dict(zip(fields, values)) for values in pipe.execute()]


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    return {k: orjson.dumps(v).decode() if k in _JSON else ("" if v is None else str(v)) for k, v in fields.items()}


def _number(value: str) -> Any:
    if value == "":
        return None
    return int(value) if value.isdigit() else value
