"""Per-tenant quotas: jobs in flight and a submit-rate token bucket, admitted atomically in Redis."""
from __future__ import annotations

import math
from typing import cast

import redis

from gpuq.common import keys
from gpuq.common.errors import RateLimited
from gpuq.common.schemas import TERMINAL_STATUSES
from gpuq.common.settings import Settings, TenantQuota

# The in-flight check comes first so a refused submit never spends a token. Time comes from the Redis
# server, so every API replica refills the same bucket on the same clock. ARGV[first..last] are the jobs to
# admit: all of them (a bulk submit is admitted whole) or none. Returns the verdict (0 admitted, 1 in-flight
# quota full, 2 rate exceeded, 3 more jobs than the burst) and the wait before a retry could pass.
# A Lua function of its own: the submit script (common/submit_script.py) admits each job with it too.
ADMIT_FUNCTION = """
local function admit(inflight, bucket, max_in_flight, rate, burst, ttl, now, first, last)
  local n = last - first + 1
  if max_in_flight > 0 and redis.call('ZCARD', inflight) + n > max_in_flight then
    return 1, 0
  end
  if rate > 0 then
    if n > burst then return 3, 0 end
    local state = redis.call('HMGET', bucket, 'tokens', 'ts')
    local tokens = tonumber(state[1]) or burst
    local ts = tonumber(state[2]) or now
    tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
    if tokens < n then
      return 2, (n - tokens) / rate
    end
    redis.call('HSET', bucket, 'tokens', tokens - n, 'ts', now)
    redis.call('EXPIRE', bucket, math.ceil(burst / rate) + 60)
  end
  if max_in_flight > 0 then
    for i = first, last do redis.call('ZADD', inflight, now, ARGV[i]) end
    redis.call('EXPIRE', inflight, ttl)
  end
  return 0, 0
end
"""
_ADMIT = ADMIT_FUNCTION + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local verdict, wait = admit(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4],
                            now, 5, #ARGV)
return {verdict, tostring(wait)}
"""
# What a tenant hears when its in-flight quota is full; there is no exact time to give, so a short wait.
IN_FLIGHT_RETRY_AFTER_S = 2.0


class Quotas:
    """Admission control for submits, per tenant."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.r = client
        self.settings = settings
        self._admit = client.register_script(_ADMIT)

    def admit(self, tenant: str, job_id: str) -> None:
        """Count ``job_id`` against the tenant's quota, or raise RateLimited (429 with Retry-After)."""
        self.admit_many(tenant, [job_id])

    def admit_many(self, tenant: str, job_ids: list[str]) -> None:
        """Count all of ``job_ids`` against the tenant's quota, or none of them (RateLimited)."""
        quota = self.settings.quota_for(tenant)
        if not _limited(quota):
            return
        verdict, wait = self._try(tenant, job_ids, quota)
        if verdict == 1 and self.prune(tenant):
            verdict, wait = self._try(tenant, job_ids, quota)
        refused = refusal(verdict, wait, tenant, quota, len(job_ids))
        if refused is not None:
            raise refused

    def limited(self, tenant: str) -> bool:
        """Whether the tenant has any quota to enforce (else ``admit`` costs nothing)."""
        return _limited(self.settings.quota_for(tenant))

    def release(self, tenant: str, job_id: str) -> None:
        """Stop counting a job that was admitted but not created (an idempotent replay, a failed publish)."""
        self.r.zrem(keys.in_flight(tenant), job_id)

    def prune(self, tenant: str) -> int:
        """Drop finished (or expired) jobs from the tenant's in-flight set; returns how many went."""
        ids = cast(list[str], self.r.zrange(keys.in_flight(tenant), 0, -1))
        if not ids:
            return 0
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), "status")
        done = [j for j, status in zip(ids, pipe.execute()) if status is None or status in TERMINAL_STATUSES]
        return int(self.r.zrem(keys.in_flight(tenant), *done)) if done else 0

    def _try(self, tenant: str, job_ids: list[str], quota: TenantQuota) -> tuple[int, float]:
        max_in_flight, rate, burst = limits(quota)
        verdict, wait = self._admit(keys=[keys.in_flight(tenant), keys.submit_bucket(tenant)],
                                    args=[max_in_flight, rate, burst, self.settings.record_ttl_s, *job_ids])
        return int(verdict), float(wait)


def refusal(verdict: int, wait: float, tenant: str, quota: TenantQuota, jobs: int = 1) -> RateLimited | None:
    """What the admission script's verdict means for the tenant (None: admitted)."""
    if verdict == 1:
        more = f"room for {jobs} more jobs" if jobs > 1 else "room for another job"
        return RateLimited(f"tenant {tenant!r} has no {more} within its quota of {quota.max_in_flight} "
                           "jobs queued or running (its in-flight quota); retry when jobs finish",
                           retry_after_s=IN_FLIGHT_RETRY_AFTER_S)
    if verdict == 3:
        return RateLimited(f"{jobs} jobs in one request exceed tenant {tenant!r}'s submit burst of "
                           f"{_burst(quota)}; send fewer at a time", retry_after_s=1.0)
    if verdict == 2:
        return RateLimited(f"tenant {tenant!r} submits faster than its quota of "
                           f"{quota.submit_rate_per_s:g} jobs/s; retry in {wait:.1f} s", retry_after_s=wait)
    return None


def limits(quota: TenantQuota) -> tuple[int, float, int]:
    """(max in flight, submit rate, burst) as the admission script takes them (0: no limit)."""
    return quota.max_in_flight or 0, quota.submit_rate_per_s or 0.0, _burst(quota)


def _burst(quota: TenantQuota) -> int:
    """Tokens the submit-rate bucket holds when full."""
    return quota.submit_burst or max(1, math.ceil(quota.submit_rate_per_s or 0.0))


def _limited(quota: TenantQuota) -> bool:
    return bool(quota.max_in_flight) or bool(quota.submit_rate_per_s)
