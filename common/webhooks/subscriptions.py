"""Accepting a job's webhook at submit: the tenant must have a signing secret and the URL must be safe."""
from __future__ import annotations

import time

import redis

from gpuq.common import keys
from gpuq.common.errors import InvalidInput
from gpuq.common.schemas import WebhookSpec
from gpuq.common.settings import Settings
from gpuq.common.webhooks.ssrf import check_webhook_url


def validate_webhook(spec: WebhookSpec, tenant: str, settings: Settings) -> WebhookSpec:
    """Check a submitted webhook (422 naming the field) and return it with its events de-duplicated."""
    if tenant not in settings.webhook_secrets:
        raise InvalidInput(f"webhook: no signing secret is configured for tenant {tenant!r}, so it cannot "
                           "receive webhooks (the operator sets GPUQ_WEBHOOK_SECRETS)", field="webhook")
    check_webhook_url(spec.url, settings.webhook_allowlist)
    return spec.model_copy(update={"events": list(dict.fromkeys(spec.events))})


def register(client: redis.Redis, job_id: str) -> None:
    """Ask the sender to follow this job's events; done before the job exists, so none can be missed."""
    client.zadd(keys.webhook_jobs(), {job_id: time.time()})
