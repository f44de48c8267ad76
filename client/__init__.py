"""gpuq's Python client: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

    from gpuq.client import Client
    with Client() as gpuq:                      # GPUQ_API_URL / GPUQ_API_KEY
        job = gpuq.submit("inference", "gpt2", "Hello", {"task": "text-generation"})
        done = gpuq.wait(job.id, timeout=120)

Receivers of gpuq webhooks check deliveries with ``verify_signature(secret, raw_body, header)``.
"""
from __future__ import annotations

from gpuq.client._base import RetryPolicy
from gpuq.client.aio import AsyncClient
from gpuq.client.sync import Client
from gpuq.common.errors import (Conflict, GpuqError, InvalidInput, NotFound, RateLimited, ServiceUnavailable,
                           Unauthorized, WaitTimeout)
from gpuq.common.schemas import ArtifactInfo, JobEvent, JobRecord, WebhookSpec
from gpuq.common.webhooks.signing import SIGNATURE_HEADER, verify_signature

__all__ = ["ArtifactInfo", "AsyncClient", "Client", "Conflict", "GpuqError", "InvalidInput", "JobEvent",
           "JobRecord", "NotFound", "RateLimited", "RetryPolicy", "SIGNATURE_HEADER", "ServiceUnavailable",
           "Unauthorized", "WaitTimeout", "WebhookSpec", "verify_signature"]
