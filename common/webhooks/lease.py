"""The webhook sender's lease: one sender is active at a time; a second waits as a standby."""
from __future__ import annotations

import secrets

import redis.asyncio as aioredis

from gpuq.common import keys

LEASE_S = 10.0

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# Take the lease, or keep it when it is still ours: after an outage shorter than the lease (or a Redis restart
# from its AOF, which keeps the key) the active sender carries on instead of waiting for its own lease to lapse.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class SenderLease:
    """This sender's claim on the lease key (a random token, so only the holder renews or releases it)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.token = secrets.token_hex(8)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

    async def acquire(self) -> bool:
        """True when this sender holds the lease now (taken, or still its own)."""
        return bool(await self._acquire(keys=[keys.webhook_sender_lock()], args=[self.token, int(LEASE_S * 1000)]))

    async def renew(self) -> bool:
        """Extend the lease; False once another sender holds it."""
        return bool(await self._renew(keys=[keys.webhook_sender_lock()], args=[self.token, int(LEASE_S * 1000)]))

    async def release(self) -> None:
        """Let the lease go at once (a standby takes over without waiting for it to lapse)."""
        await self._renew(keys=[keys.webhook_sender_lock()], args=[self.token, 1])
