"""Riding out a Redis outage in a long-running loop: capped backoff, one log line when it starts and one when
it ends, instead of a traceback per try.

Every background loop (webhook sender, heartbeat and reaper, progress writer, lease renewal, the API's
finished-job subscription, SSE follows) keeps one ``Outage`` and calls ``failed`` on a connection error and
``ok`` after a round trip that worked. The loop itself never ends because Redis went away; it resumes when
Redis returns, however long that takes.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time

from kombu.exceptions import OperationalError as BrokerUnavailable
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What an outage raises (a restart, Redis still loading its AOF, a failover, a cut network; kombu's error when
# the broker, the same Redis, cannot be reached): the loop waits and tries again. Other Redis errors (a wrong type, a script error) are bugs, not outages.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, ReadOnlyError,
                                                  BrokerUnavailable, OSError)


class Outage:
    """One loop's view of the current outage: when it began, and how long to wait before the next try."""

    def __init__(self, what: str, log: logging.Logger, base_s: float = 0.1, cap_s: float = 2.0,
                 level: int = logging.WARNING) -> None:
        self.what = what
        self.log = log
        self.level = level  # DEBUG for loops there are many of (one per open SSE stream)
        self.base_s = base_s
        self.cap_s = cap_s
        self.since: float | None = None
        self.tries = 0

    @property
    def down(self) -> bool:
        """True between a failure and the next success."""
        return self.since is not None

    def failed(self, exc: BaseException) -> float:
        """Note a failed try; the delay before the next (exponential, capped, with jitter)."""
        if self.since is None:
            self.since = time.monotonic()
            self.log.log(self.level, "%s: Redis unavailable (%s: %s); retrying until it returns", self.what,
                         type(exc).__name__, str(exc)[:200])
        self.tries += 1
        full = min(self.cap_s, self.base_s * 2 ** min(self.tries - 1, 16))
        return float(full / 2 + random.uniform(0, full / 2))

    def ok(self) -> None:
        """Note a try that worked; ends the outage (logged once) if there was one."""
        if self.since is not None:
            self.log.log(self.level, "%s: Redis is back after %.1f s (%d tries)", self.what,
                         time.monotonic() - self.since, self.tries)
        self.since, self.tries = None, 0

    def wait(self, exc: BaseException) -> None:
        """``failed``, then sleep the delay (threads)."""
        time.sleep(self.failed(exc))

    async def pause(self, exc: BaseException) -> None:
        """``failed``, then sleep the delay (asyncio)."""
        await asyncio.sleep(self.failed(exc))
