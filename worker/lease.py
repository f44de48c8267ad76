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

from common import keys

log = logging.getLogger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class Lease:
    """A renewed lease on one job, held by ``owner``."""

    def __init__(self, client: redis.Redis, job_id: str, owner: str, ttl_s: float) -> None:
        self.r, self.key, self.owner, self.ttl_ms = client, keys.lease(job_id), owner, int(ttl_s * 1000)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; start renewing it."""
        if not self.r.set(self.key, self.owner, nx=True, px=self.ttl_ms):
            return False
        self._thread = threading.Thread(target=self._renew, name="gpuq-lease", daemon=True)
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self.r.eval(_RENEW, 1, self.key, self.owner, self.ttl_ms):
                    log.warning("lost lease %s", self.key)
                    return
            except redis.RedisError as exc:
                log.warning("lease renewal failed: %s", exc)

    def release(self) -> None:
        """Stop renewing and drop the lease if still ours."""
        self._stop.set()
        try:
            self.r.eval(_RELEASE, 1, self.key, self.owner)
        except redis.RedisError as exc:
            log.warning("lease release failed (it will expire): %s", exc)


def holder(client: redis.Redis, job_id: str) -> str | None:
    """Who holds the job's lease now, if anyone."""
    value = client.get(keys.lease(job_id))
    return str(value) if value else None
