"""Accepting a job: validate it, admit it under the tenant's quota, store it, enqueue it.

``prepare`` and ``Submitted`` serve every submit path. ``submit`` is the one through Celery's publish:
synchronous (Redis and the broker are blocking clients), so async routes call it through the thread pool.
Single submits go through api/intake.py (one round trip, on the event loop) unless ``GPUQ_SUBMIT_ONE_TRIP``
is false.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import orjson
from redis.exceptions import RedisError

from gpuq.api import queue
from gpuq.api.coalesce import Coalescer
from gpuq.api.routing import Router
from gpuq.common import keys, stats
from gpuq.common.errors import ServiceUnavailable
from gpuq.common.jobs.registry import JobSpec, Submitter, get_spec
from gpuq.common.quotas import Quotas
from gpuq.common.records import JobStore, body_hash, to_record
from gpuq.common.redis_client import get_redis
from gpuq.common.schemas import JobRecord, JobRequest, Timings
from gpuq.common.settings import Settings, get_settings
from gpuq.common.webhooks.subscriptions import register, validate_webhook


@dataclass(frozen=True)
class Submitted:
    """A stored job (its decoded fields), and whether an earlier submit with the same idempotency key made it.

    The wire record is built on first use: an answer that waits for the job reads it again instead."""

    fields: dict[str, Any]
    replayed: bool

    @property
    def job_id(self) -> str:
        return str(self.fields["id"])

    @property
    def status(self) -> str:
        return str(self.fields["status"])

    @cached_property
    def record(self) -> JobRecord:
        return to_record(self.fields)

    def json(self) -> bytes:
        """The wire record as JSON; a job just stored is written straight from the fields its submit built."""
        return self.record.model_dump_json().encode() if self.replayed else fresh_json(self.fields)


_TIMINGS = tuple(Timings.model_fields)


def fresh_json(fields: dict[str, Any]) -> bytes:
    """``JobRecord`` JSON of a job just stored (queued, never run) without validating the record again: every
    field is one the submit built from a validated request, or a default (a test holds the two together)."""
    timings = fields["timings"]
    try:
        return orjson.dumps({
            "id": fields["id"], "tenant": fields["tenant"], "kind": fields["kind"], "model": fields["model"],
            "queue": fields["queue"], "priority": fields["priority"], "status": fields["status"],
            "params": fields["params"], "progress": None, "result": None, "error": None, "artifacts": [],
            "worker": None, "attempts": 0, "cancel_requested": False,
            "timings": {name: timings.get(name) for name in _TIMINGS}, "webhook": fields.get("webhook"),
            "resolved": None, "batch": None})
    except TypeError:  # what orjson refuses (an integer beyond 64 bits in params): the validated record
        return to_record(fields).model_dump_json().encode()


@dataclass(frozen=True)
class Prepared:
    """A request checked against its kind: the fields of the record it becomes."""

    spec: JobSpec
    fields: dict[str, Any]
    webhook: bool


def prepare(body: JobRequest, tenant: str, settings: Settings) -> Prepared:
    """Validate a request against its kind (422 naming the field) and build its record's fields."""
    spec = get_spec(body.kind)
    valid = spec.validate(body.model, body.inputs, body.params, Submitter(tenant, settings))
    webhook = validate_webhook(body.webhook, tenant, settings) if body.webhook else None
    fields: dict[str, Any] = {
        "id": uuid.uuid4().hex, "tenant": tenant, "kind": spec.kind, "model": valid.model, "queue": spec.queue,
        "priority": body.priority, "status": "queued", "inputs": valid.inputs, "params": valid.params,
        "attempts": 0, "cancel_requested": 0, "timings": {"submitted_at": time.time()},
    }
    if webhook is not None:
        fields["webhook"] = webhook.model_dump(mode="json")
    return Prepared(spec, fields, webhook is not None)


def submit(body: JobRequest, tenant: str, jobs: JobStore, settings: Settings,
           idempotency_key: str | None = None) -> Submitted:
    """Validate, admit, store and enqueue a job; replay the earlier job for a known idempotency key."""
    with coalescer().submitting():
        return _submit(body, tenant, jobs, settings, idempotency_key)


def _submit(body: JobRequest, tenant: str, jobs: JobStore, settings: Settings,
            idempotency_key: str | None) -> Submitted:
    prepared = prepare(body, tenant, settings)
    spec, fields, webhook = prepared.spec, prepared.fields, prepared.webhook
    job_id = fields["id"]
    quotas = Quotas(jobs.r, settings)
    try:
        # Only quotas and webhooks need to know about a replay before the submit script (which detects it
        # too): without them, skip the extra read.
        replay = _replayed(jobs, tenant, idempotency_key) if webhook or quotas.limited(tenant) else None
        if replay is None:
            quotas.admit(tenant, job_id)
        if webhook and replay is None:
            register(jobs.r, job_id)
        request_hash = body_hash(body.model_dump(mode="json")) if idempotency_key else ""
        existing = jobs.create(fields, idempotency_key, request_hash)
        if existing is not None:
            quotas.release(tenant, job_id)
            return Submitted(jobs.get_fields(existing, tenant), replayed=True)
        try:
            route = affinity_router().route(spec, fields["model"])
            if spec.groups and settings.submit_coalesce_ms > 0:
                coalescer().publish(job_id, spec, fields["model"], body.priority, route)
            else:
                queue.publish(job_id, spec, body.priority, route)
        except ServiceUnavailable:
            jobs.delete(job_id, tenant, idempotency_key)
            quotas.release(tenant, job_id)
            raise
        stats.count_submitted(jobs.r, spec.kind)
        return Submitted(fields, replayed=False)  # what was just stored: no read back
    except RedisError as exc:
        raise ServiceUnavailable(f"job store unavailable: {type(exc).__name__}") from exc


@lru_cache(maxsize=1)
def coalescer() -> Coalescer:
    """The process's coalescer: concurrent single submits of one model share a group message."""
    settings = get_settings()
    return Coalescer(settings.submit_coalesce_ms / 1000, settings.group_max_jobs, queue.publish, queue.publish_group)


@lru_cache(maxsize=1)
def affinity_router() -> Router:
    """The process's affinity router: sends a job to a worker that holds its model resident."""
    return Router(get_redis(), get_settings())


def _replayed(jobs: JobStore, tenant: str, idempotency_key: str | None) -> str | None:
    """The idempotency record, if this key was used before (a replay is not charged against quotas)."""
    if not idempotency_key:
        return None
    value = jobs.r.get(keys.idempotency(tenant, idempotency_key))
    return str(value) if value else None
