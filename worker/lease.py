"""Per-job leases: at most one live worker runs a job at a time, and a dead worker's job is noticed.

A worker holds ``lease:<job>`` (value: its id, TTL ``lease_ttl_s``) while the job runs and renews it from a
background thread. A duplicate delivery (the broker's visibility timeout restoring a message whose job is
still running) finds the lease held and is dropped; a job whose worker died loses its lease within one TTL
and the sweeper puts it back on its queue.

One renewal thread per process renews every lease the process holds, in one call per client and owner: a
thread started for each job cost a threads-pool worker more CPU than the rest of the lease, at hundreds of
jobs a second, and their renewals were as many round trips.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import redis
from redis.commands.core import Script

from gpuq.common import keys
from gpuq.common.outage import Outage
from gpuq.common.records import queue_script, script_answer

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
_SCRIPTS: dict[str, Script] = {}


def _script(client: redis.Redis, text: str) -> Script:
    """The script object for ``text`` (its sha computed once per process; run with ``client=``)."""
    found = _SCRIPTS.get(text)
    if found is None:
        found = _SCRIPTS[text] = client.register_script(text)
    return found


class Leases:
    """Leases on jobs ``owner`` already holds (a group's, taken by its claim script), renewed together."""

    def __init__(self, client: redis.Redis, job_ids: list[str], owner: str, ttl_s: float) -> None:
        self.r, self.owner, self.ttl_ms = client, owner, int(ttl_s * 1000)
        self.keys = [keys.lease(job_id) for job_id in job_ids]

    def renew(self) -> None:
        """Start renewing (by the process's renewal thread, one round trip per renewal for all its leases)."""
        renewer().add(self)

    def _each(self, script: str, *args: int) -> list[object]:
        """Run ``script`` on every lease key still held, in one call (EVALSHA); 1/0 per key."""
        if not self.keys:
            return []
        return list(_script(self.r, script)(keys=self.keys, args=[self.owner, *args], client=self.r))

    def forget(self) -> None:
        """Stop renewing leases that a script already dropped (a job's outcome, written with its release)."""
        renewer().discard(self)
        self.keys = []

    def release(self, after: Any = None) -> None:
        """Stop renewing and drop the leases still ours; ``after(pipe)`` may queue more commands (best effort,
        as the release is: the job's telemetry) into the same round trip."""
        renewer().discard(self)
        try:
            if after is None:
                self._each(_RELEASE)
            else:
                self._release_with(after)
        except redis.RedisError as exc:
            log.warning("lease release failed (it will expire): %s", exc)
        self.keys = []  # released, or left to expire: a second release has nothing to do

    def _release_with(self, after: Any) -> None:
        script, held, args = _script(self.r, _RELEASE), list(self.keys), [self.owner]
        pipe = self.r.pipeline(transaction=False)
        if held:
            queue_script(pipe, script, held, args)
        try:
            after(pipe)
        except Exception:  # what rides along must not keep the lease from being released
            log.exception("could not queue the commands sent with a lease release")
        answers = pipe.execute(raise_on_error=False)
        if held:
            script_answer(script, answers[0], held, args)


class Lease(Leases):
    """A renewed lease on one job, held by ``owner``."""

    def __init__(self, client: redis.Redis, job_id: str, owner: str, ttl_s: float) -> None:
        super().__init__(client, [job_id], owner, ttl_s)
        self.key = self.keys[0]

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; start renewing it."""
        return self.acquire_reading(None)[0]

    def acquire_reading(self, read: Any) -> tuple[bool, Any]:
        """``acquire``, with ``read(pipe)``'s one command (the job's record) sent first in the same round trip;
        returns whether the lease is ours and that command's answer. The lease is taken whatever the answer:
        the caller releases it when the answer says the job is not to run (rare: a redelivered finished job)."""
        if read is None:
            taken, answer = self.r.set(self.key, self.owner, nx=True, px=self.ttl_ms), None
        else:
            pipe = self.r.pipeline(transaction=False)
            read(pipe)
            pipe.set(self.key, self.owner, nx=True, px=self.ttl_ms)
            answer, taken = pipe.execute()
        if taken:
            self.keys = [self.key]  # held again, should this lease have been released before
            self.renew()
        return bool(taken), answer


class Renewer:
    """The process's renewal thread: every ``ttl / 3`` it renews all the leases held, one call per client,
    owner and TTL; after a failed call it retries with the outage's backoff (a lease must not lapse because
    Redis was gone for a moment and the next regular renewal came too late)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._held: dict[Leases, None] = {}  # ordered: renewals go out in the order the leases were taken
        self._cv = threading.Condition()
        self._interval = float("inf")
        self._outage = Outage("lease renewal", log)
        threading.Thread(target=self._loop, name="gpuq-lease", daemon=True).start()

    def add(self, leases: Leases) -> None:
        with self._cv:
            idle = not self._held
            self._held[leases] = None
            # Wake the thread only when it sleeps without a deadline or this lease needs an earlier tick.
            if idle or leases.ttl_ms / 3000 < self._interval:
                self._interval = min(self._interval, leases.ttl_ms / 3000)
                self._cv.notify()

    def discard(self, leases: Leases) -> None:
        with self._cv:
            self._held.pop(leases, None)

    def _loop(self) -> None:
        wait = float("inf")
        while True:
            with self._cv:
                deadline = time.monotonic() + min(wait, self._interval)
                while not (self._held and time.monotonic() >= deadline):
                    self._cv.wait(None if not self._held else max(deadline - time.monotonic(), 0.0))
                    deadline = min(deadline, time.monotonic() + self._interval)
                held = list(self._held)
            try:
                wait = self._renew(held)
            except Exception:  # a bug in one renewal must not end renewals: leases would lapse under live jobs
                log.exception("lease renewal failed")
                wait = 1.0

    def _renew(self, held: list[Leases]) -> float:
        """Renew ``held``; how long until the next renewal (sooner after a failure)."""
        groups: dict[tuple[int, str, int], list[Leases]] = {}
        for leases in held:
            groups.setdefault((id(leases.r), leases.owner, leases.ttl_ms), []).append(leases)
        try:
            for group in groups.values():
                self._renew_group(group)
        except redis.RedisError as exc:
            return float(self._outage.failed(exc))
        self._outage.ok()
        with self._cv:
            self._interval = min((leases.ttl_ms / 3000 for leases in self._held), default=float("inf"))
        return float("inf")

    def _renew_group(self, group: list[Leases]) -> None:
        first = group[0]
        every = [key for leases in group for key in leases.keys]
        if not every:
            return
        kept: Any = _script(first.r, _RENEW)(keys=every, args=[first.owner, first.ttl_ms], client=first.r)
        ok = dict(zip(every, kept))
        with self._cv:
            for leases in group:
                if leases not in self._held:  # released meanwhile: its keys are gone on purpose
                    continue
                for key in leases.keys:
                    if not ok.get(key, 1):
                        log.warning("lost lease %s", key)
                leases.keys = [key for key in leases.keys if ok.get(key, 1)]


_RENEWER: Renewer | None = None
_LOCK = threading.Lock()


def renewer() -> Renewer:
    """The process's renewal thread (a fresh one after a fork: threads do not survive it)."""
    global _RENEWER
    with _LOCK:
        if _RENEWER is None or _RENEWER.pid != os.getpid():
            _RENEWER = Renewer()
        return _RENEWER


def holder(client: redis.Redis, job_id: str) -> str | None:
    """Who holds the job's lease now, if anyone."""
    value = client.get(keys.lease(job_id))
    return str(value) if value else None
