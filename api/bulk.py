"""Bulk submits: many jobs in one request (``POST /v1/jobs/batch``).

Each job is a job like any other (its own record, events, result, cancel), but the request costs one HTTP
exchange, one round trip to store every record, and one Celery message per group of jobs that share a kind
(one whose spec has ``groups``), model and priority, up to ``GPUQ_GROUP_MAX_JOBS`` each; other kinds get one
message per job. Validation is all or nothing: one bad job refuses the request (422 naming ``jobs.<i>.<field>``)
and nothing is stored. An ``Idempotency-Key`` covers the whole request: job ``i`` is stored under
``<key>#<i>``, so a retry after a lost answer, or after a 503 halfway through publishing, replays the jobs
already accepted and creates only the missing ones.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from redis.exceptions import RedisError

from gpuq.api import queue
from gpuq.api.submission import Prepared, Submitted, affinity_router, prepare
from gpuq.common import keys, stats
from gpuq.common.errors import Conflict, InvalidInput, ServiceUnavailable
from gpuq.common.quotas import Quotas
from gpuq.common.records import JobStore, body_hash
from gpuq.common.schemas import JobRequest
from gpuq.common.settings import Settings
from gpuq.common.webhooks.subscriptions import register

# Bulk submits in one process take turns: interleaved under the GIL, a burst of them would publish its first
# jobs only once every request was nearly done, and the workers would wait for the first group all that time.
_TURNS = threading.Lock()


def submit_many(bodies: list[JobRequest], tenant: str, jobs: JobStore, settings: Settings,
                idempotency_key: str | None = None) -> list[Submitted]:
    """Validate every job, then store and enqueue them; replay the jobs an idempotency key already made."""
    with _TURNS:
        return _submit_many(bodies, tenant, jobs, settings, idempotency_key)


def _submit_many(bodies: list[JobRequest], tenant: str, jobs: JobStore, settings: Settings,
                 idempotency_key: str | None) -> list[Submitted]:
    if len(bodies) > settings.bulk_max_jobs:
        raise InvalidInput(f"jobs: {len(bodies)} jobs in one request, at most {settings.bulk_max_jobs} "
                           "(GPUQ_BULK_MAX_JOBS)", field="jobs")
    prepared = [_prepare(i, body, tenant, settings) for i, body in enumerate(bodies)]
    item_keys = [f"{idempotency_key}#{i}" if idempotency_key else None for i in range(len(bodies))]
    hashes = [body_hash(b.model_dump(mode="json")) if idempotency_key else "" for b in bodies]
    try:
        known = _known(jobs, tenant, item_keys, hashes)
        replays = _replays(jobs, known)  # before anything is stored: a key naming an expired job is a 409
        fresh = [i for i in range(len(bodies)) if i not in known]
        admitted = _admit(Quotas(jobs.r, settings), tenant, [prepared[i] for i in fresh])
        for i in fresh:
            if prepared[i].webhook:
                register(jobs.r, prepared[i].fields["id"])
        answers = jobs.create_many([(prepared[i].fields, item_keys[i], hashes[i]) for i in fresh])
        for i, existing in zip(fresh, answers):
            if existing is not None:  # a concurrent retry with the same key stored this one first
                known[i] = existing
                admitted.release(prepared[i].fields["id"])
        created = [prepared[i] for i in fresh if i not in known]
        _publish(created, jobs, tenant, item_keys, admitted, settings.group_max_jobs)
        raced = {i: known[i] for i in known if i not in replays}
        replays.update(_replays(jobs, raced, strict=False))
    except RedisError as exc:
        raise ServiceUnavailable(f"job store unavailable: {type(exc).__name__}") from exc
    return [Submitted(replays[i], replayed=True) if i in replays else Submitted(job.fields, replayed=False)
            for i, job in enumerate(prepared)]


def _replays(jobs: JobStore, known: dict[int, str], strict: bool = True) -> dict[int, dict[str, Any]]:
    """The records of jobs an idempotency key already made; with ``strict``, 409 when one has expired."""
    if not known:
        return {}
    out: dict[int, dict[str, Any]] = {}
    for (i, job_id), raw in zip(known.items(), jobs.get_many_raw(list(known.values()))):
        if raw is None:
            if strict:
                raise Conflict(f"jobs.{i}: the job this Idempotency-Key named ({job_id}) has expired; submit "
                               "with a new key", field="Idempotency-Key")
            continue
        out[i] = raw
    return out


def _prepare(index: int, body: JobRequest, tenant: str, settings: Settings) -> Prepared:
    try:
        return prepare(body, tenant, settings)
    except InvalidInput as exc:
        named = exc.field and exc.message.startswith(exc.field)
        message = f"jobs.{index}.{exc.message}" if named else f"jobs.{index}: {exc.message}"
        raise InvalidInput(message, field=f"jobs.{index}.{exc.field or 'body'}") from None


def _known(jobs: JobStore, tenant: str, item_keys: list[str | None], hashes: list[str]) -> dict[int, str]:
    """Jobs this request's idempotency key already made (index -> job id); 409 if one had another body."""
    if not item_keys or item_keys[0] is None:
        return {}
    values = jobs.r.mget([keys.idempotency(tenant, str(k)) for k in item_keys])
    known: dict[int, str] = {}
    for i, value in enumerate(values):
        if value:
            prior: dict[str, Any] = json.loads(value)
            if prior["body_hash"] != hashes[i]:
                raise Conflict(f"Idempotency-Key was already used with a different request (jobs.{i} differs)",
                               field="Idempotency-Key")
            known[i] = str(prior["job_id"])
    return known


class _Admitted:
    """Jobs counted against the tenant's quota, released again if they are not created after all."""

    def __init__(self, quotas: Quotas, tenant: str) -> None:
        self.quotas, self.tenant = quotas, tenant
        self.ids: list[str] = []

    def release(self, job_id: str) -> None:
        if job_id in self.ids:
            self.quotas.release(self.tenant, job_id)


def _admit(quotas: Quotas, tenant: str, items: list[Prepared]) -> _Admitted:
    """Admit every job under the tenant's quota, or none (429 when the whole request does not fit)."""
    admitted = _Admitted(quotas, tenant)
    if items and quotas.limited(tenant):
        quotas.admit_many(tenant, [item.fields["id"] for item in items])
        admitted.ids = [item.fields["id"] for item in items]
    return admitted


def _publish(created: list[Prepared], jobs: JobStore, tenant: str, item_keys: list[str | None],
             admitted: _Admitted, group_size: int) -> None:
    """One message per group (kinds with ``groups``) or per job; on a broker failure the jobs not yet
    published are deleted (a retry with the same Idempotency-Key recreates exactly those) and 503 raised."""
    pending = list(created)
    try:
        for spec, model, priority, chunk in _groups(created, group_size):
            queue_name = affinity_router().route(spec, model, jobs=len(chunk))
            ids = [p.fields["id"] for p in chunk]
            if spec.groups and len(chunk) > 1:
                queue.publish_group(ids, spec, priority, queue_name)
            else:
                for job_id in ids:
                    queue.publish(job_id, spec, priority, queue_name)
            done = set(ids)
            pending = [p for p in pending if p.fields["id"] not in done]
    except ServiceUnavailable:
        index = {p.fields["id"]: k for p, k in zip(created, item_keys)}
        for p in pending:
            jobs.delete(p.fields["id"], tenant, index.get(p.fields["id"]))
            admitted.release(p.fields["id"])
        raise
    finally:
        counts: dict[str, int] = {}
        pending_ids = {p.fields["id"] for p in pending}
        for p in created:
            if p.fields["id"] not in pending_ids:
                counts[p.spec.kind] = counts.get(p.spec.kind, 0) + 1
        for kind, n in counts.items():
            stats.count_submitted(jobs.r, kind, n)


def _groups(created: list[Prepared], size: int) -> Iterator[tuple[Any, str, str, list[Prepared]]]:
    """(spec, model, priority, jobs): chunks of up to ``size`` jobs of a grouping kind, else single jobs."""
    buckets: dict[tuple[str, str, str], list[Prepared]] = {}
    for p in created:
        if not p.spec.groups:
            yield p.spec, p.fields["model"], p.fields["priority"], [p]
            continue
        buckets.setdefault((p.spec.kind, p.fields["model"], p.fields["priority"]), []).append(p)
    for (_, model, priority), items in buckets.items():
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            yield chunk[0].spec, model, priority, chunk
