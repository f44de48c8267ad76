"""Per-job leases: at most one live worker runs a job at a time, and a dead worker's job is noticed.

A worker holds ``lease:<job>`` (value: its id, TTL ``lease_ttl_s``) while the job runs and renews it from a
background thread. A duplicate delivery (the broker's visibility timeout restoring a message whose job is
still running) finds the lease held and is dropped; a job whose worker died loses its lease within one TTL
and the sweeper puts it back on its queue.
"""
from __future__ import annotations

import logging
import threading

import redis

from gpuq.common import keys
from gpuq.common.outage import Outage

log = logging.getLogger(__name__)

# Both take every lease key of a group in one call and answer 1/0 per key (still ours or not).
_RELEASE = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then out[i] = redis.call('DEL', key) else out[i] = 0 end
end
return out
"""
_RENEW = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then out[i] = redis.call('PEXPIRE', key, ARGV[2]) else out[i] = 0 end
end
return out
"""


class Leases:
    """Leases on jobs ``owner`` already holds (a group's, taken by its claim script), renewed together."""

    def __init__(self, client: redis.Redis, job_ids: list[str], owner: str, ttl_s: float) -> None:
        self.r, self.owner, self.ttl_ms = client, owner, int(ttl_s * 1000)
        self.keys = [keys.lease(job_id) for job_id in job_ids]
        self._scripts = {_RENEW: client.register_script(_RENEW), _RELEASE: client.register_script(_RELEASE)}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def renew(self) -> None:
        """Start renewing (one thread, one round trip per renewal for all the leases)."""
        self._thread = threading.Thread(target=self._renew, name="gpuq-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        outage = Outage(f"lease renewal of {len(self.keys)} job(s)", log)  # one line per outage, not per try
        while self.keys and not self._stop.wait(self.ttl_ms / 3000):
            try:
                kept = self._each(_RENEW, self.ttl_ms)
                outage.ok()
            except redis.RedisError as exc:
                outage.failed(exc)
                continue
            lost = [key for key, ok in zip(self.keys, kept) if not ok]
            for key in lost:
                log.warning("lost lease %s", key)
            self.keys = [key for key, ok in zip(self.keys, kept) if ok]

    def _each(self, script: str, *args: int) -> list[object]:
        """Run ``script`` on every lease key still held, in one call (EVALSHA); 1/0 per key."""
        if not self.keys:
            return []
        return list(self._scripts[script](keys=self.keys, args=[self.owner, *args]))

    def release(self) -> None:
        """Stop renewing and drop the leases still ours."""
        self._stop.set()
        try:
            self._each(_RELEASE)
        except redis.RedisError as exc:
            log.warning("lease release failed (it will expire): %s", exc)


class Lease(Leases):
    """A renewed lease on one job, held by ``owner``."""

    def __init__(self, client: redis.Redis, job_id: str, owner: str, ttl_s: float) -> None:
        super().__init__(client, [job_id], owner, ttl_s)
        self.key = self.keys[0]

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; start renewing it."""
        if not self.r.set(self.key, self.owner, nx=True, px=self.ttl_ms):
            return False
        self.renew()
        return True


def holder(client: redis.Redis, job_id: str) -> str | None:
    """Who holds the job's lease now, if anyone."""
    value = client.get(keys.lease(job_id))
    return str(value) if value else None
