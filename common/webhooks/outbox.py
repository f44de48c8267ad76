"""The sender's state in Redis: per-job cursor, per-job ordered outbox, a due-time index, dead letters.

Every step that moves a cursor or an outbox head is one MULTI or Lua call, so a sender that dies at any
point resumes without losing a delivery (at least once: a receiver de-duplicates on ``X-Gpuq-Delivery``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from gpuq.common import keys
from gpuq.common.schemas import JobEvent

# Pop the head delivery (optionally into the dead-letter list) and schedule the next one, atomically, so a
# delivery appended meanwhile is never left unscheduled.
_POP = """
local entry = redis.call('LPOP', KEYS[1])
if ARGV[3] == '1' and entry then
  redis.call('RPUSH', KEYS[4], entry)
  redis.call('LTRIM', KEYS[4], -1000, -1)
end
redis.call('HDEL', KEYS[3], 'attempts')
if redis.call('LLEN', KEYS[1]) > 0 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return entry
"""


@dataclass(frozen=True)
class Delivery:
    """One queued POST: the body is fixed at enqueue time, the signature is made per attempt."""

    job_id: str
    event_id: str
    event: str
    tenant: str
    url: str
    body: str

    def dumps(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def loads(cls, raw: str) -> Delivery:
        return cls(**json.loads(raw))


def payload(job_id: str, event: JobEvent, job: dict[str, Any] | None) -> str:
    """The JSON body a receiver gets; terminal events carry the whole job record."""
    body: dict[str, Any] = {"id": f"{job_id}:{event.id}", "type": event.type, "job_id": job_id,
                            "event_id": event.id, "created_at": int(event.id.split("-")[0]) / 1000,
                            "data": event.data}
    if job is not None:
        body["job"] = job
    return json.dumps(body, separators=(",", ":"))


class Outbox:
    """Typed operations on the sender's keys."""

    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.r = client
        self.ttl_s = ttl_s
        self._pop = client.register_script(_POP)

    async def following(self) -> list[str]:
        """Job ids whose streams are still followed."""
        return cast(list[str], await self.r.zrange(keys.webhook_jobs(), 0, -1))

    async def cursors(self, job_ids: list[str]) -> dict[str, str]:
        """Where each job's stream was read up to ("0" when never)."""
        pipe = self.r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(keys.webhook_state(job_id), "cursor")
        return {j: c or "0" for j, c in zip(job_ids, await pipe.execute())}

    async def state(self, job_id: str) -> dict[str, str]:
        return cast(dict[str, str], await self.r.hgetall(keys.webhook_state(job_id)))

    async def advance(self, job_id: str, event_id: str, terminal: bool, delivery: Delivery | None = None,
                      progress_at: float | None = None) -> None:
        """Move the cursor past an event, queueing its delivery (if any) in the same transaction."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(keys.webhook_state(job_id), "cursor", event_id)
        if progress_at is not None:
            pipe.hset(keys.webhook_state(job_id), "progress_at", progress_at)
        pipe.expire(keys.webhook_state(job_id), self.ttl_s)
        if delivery is not None:
            pipe.rpush(keys.webhook_outbox(job_id), delivery.dumps())
            pipe.expire(keys.webhook_outbox(job_id), self.ttl_s)
            pipe.zadd(keys.webhook_due(), {job_id: time.time()}, nx=True)
        if terminal:
            pipe.zrem(keys.webhook_jobs(), job_id)
        await pipe.execute()

    async def forget(self, job_id: str) -> None:
        """Stop following a job whose record is gone (expired, or never created)."""
        await self.r.zrem(keys.webhook_jobs(), job_id)

    async def due(self, limit: int) -> list[str]:
        """Jobs whose head delivery should be attempted now."""
        return cast(list[str], await self.r.zrangebyscore(keys.webhook_due(), "-inf", time.time(), start=0,
                                                          num=limit))

    async def next_due(self, exclude: set[str]) -> float | None:
        """When the earliest pending delivery not already in progress is due (None when there is none)."""
        due = cast(list[tuple[str, float]], await self.r.zrange(keys.webhook_due(), 0, len(exclude), withscores=True))
        for job_id, score in due:
            if job_id not in exclude:
                return float(score)
        return None

    async def head(self, job_id: str) -> Delivery | None:
        raw = cast(str | None, await self.r.lindex(keys.webhook_outbox(job_id), 0))
        return Delivery.loads(raw) if raw else None

    async def done(self, job_id: str, dead: bool = False) -> None:
        """The head was delivered (or given up on, into the dead-letter list); schedule the next."""
        await self._pop(keys=[keys.webhook_outbox(job_id), keys.webhook_due(), keys.webhook_state(job_id),
                              keys.webhook_dead()], args=[job_id, time.time(), "1" if dead else "0"])

    async def retry_later(self, job_id: str, delay_s: float) -> int:
        """Count a failed attempt and schedule the next one; returns the attempts so far."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hincrby(keys.webhook_state(job_id), "attempts", 1)
        pipe.zadd(keys.webhook_due(), {job_id: time.time() + delay_s})
        attempts, _ = await pipe.execute()
        return int(attempts)

    async def attempts(self, job_id: str) -> int:
        return int(await self.r.hget(keys.webhook_state(job_id), "attempts") or 0)

    async def dead_letters(self) -> list[Delivery]:
        return [Delivery.loads(raw) for raw in cast(list[str], await self.r.lrange(keys.webhook_dead(), 0, -1))]
