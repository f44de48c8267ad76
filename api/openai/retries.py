"""The openai SDK retries a call (connection errors, timeouts, 409, 429, 5xx) without an idempotency key.

So that a retry never makes a second job, an SDK call (it sends ``x-stainless-retry-count``) leaves its request
fingerprint behind for ``GPUQ_OPENAI_RETRY_WINDOW_S``: (tenant, route, request) -> the object it made. A retry
(count above 0) with the same fingerprint answers from that object; a first attempt always makes a new one, so
two identical calls are two jobs. A caller's own ``Idempotency-Key`` works as on the native API and takes
precedence.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import cast

import redis
from fastapi import Request
from gpuq.common import keys
from gpuq.common.redis_client import loop_redis
from gpuq.common.settings import Settings

RETRY_HEADER = "x-stainless-retry-count"


@dataclass(frozen=True)
class Attempt:
    """How an OpenAI call may repeat an earlier one: a caller's key, or the SDK's retry fingerprint."""

    idempotency_key: str | None
    fingerprint: str | None  # set for SDK calls
    retry: bool  # an SDK retry (not its first attempt)


async def attempt_of(request: Request, route: str) -> Attempt:
    """What the request says about being a repeat. The fingerprint is the route and the body's bytes: the SDK
    sends a retry's body byte for byte as its first attempt's (read already, so no second read)."""
    key = request.headers.get("idempotency-key")
    count = request.headers.get(RETRY_HEADER)
    if key or count is None:
        return Attempt(key or None, None, False)
    digest = hashlib.sha256(route.encode() + b"\n" + await request.body()).hexdigest()[:32]
    return Attempt(None, digest, count.strip() not in ("", "0"))


def earlier(r: redis.Redis, tenant: str, attempt: Attempt, keyed: bool = False) -> str | None:
    """The object a retried SDK call's first attempt made, if it is known; with ``keyed``, also the object an
    ``Idempotency-Key`` named (for objects that are not a single job, whose submit honours the key itself)."""
    key = _lookup(tenant, attempt, keyed)
    found = r.get(key) if key is not None else None
    return cast(str, found) if found else None


async def earlier_on_loop(tenant: str, attempt: Attempt, keyed: bool = False) -> str | None:
    """``earlier`` on the event loop's client (no thread hop); a first attempt asks Redis nothing."""
    key = _lookup(tenant, attempt, keyed)
    found = await loop_redis().get(key) if key is not None else None
    return cast(str, found) if found else None


def pointer(tenant: str, attempt: Attempt, settings: Settings, keyed: bool = False) -> tuple[str, int] | None:
    """The key (and its ttl in seconds) that leaves an SDK call's fingerprint (with ``keyed``, its
    Idempotency-Key) behind for its retries, pointing at the object the call makes; None when there is none.
    A job's submit sets it in the same script call that stores the job (api/intake.py)."""
    name = _name(attempt, keyed)
    if name is None:
        return None
    ttl = max(settings.openai_retry_window_s, settings.idempotency_ttl_s if name != attempt.fingerprint else 0)
    return keys.openai_retry(tenant, name), ttl


def remember(r: redis.Redis, tenant: str, attempt: Attempt, object_id: str, settings: Settings,
             keyed: bool = False) -> None:
    """Leave an SDK call's fingerprint (with ``keyed``, its Idempotency-Key) behind for its retries."""
    found = pointer(tenant, attempt, settings, keyed)
    if found is not None:
        r.set(found[0], object_id, ex=found[1])


def _lookup(tenant: str, attempt: Attempt, keyed: bool) -> str | None:
    """The key an earlier attempt left behind, when this attempt may repeat one."""
    name = _name(attempt, keyed)
    if name is None or (name == attempt.fingerprint and not attempt.retry):
        return None
    return str(keys.openai_retry(tenant, name))


def _name(attempt: Attempt, keyed: bool) -> str | None:
    if keyed and attempt.idempotency_key:
        return "key:" + hashlib.sha256(attempt.idempotency_key.encode()).hexdigest()[:32]
    return attempt.fingerprint
