"""One error tree for gpuq. HTTP status and retry policy are properties of the class."""
from __future__ import annotations

import math
from typing import Any


class GpuqError(Exception):
    """Root of every error gpuq raises on purpose."""

    status_code: int = 500
    retryable: bool = False
    type_name: str = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        """Wire form used by the API body and the job record's ``error``."""
        body: dict[str, Any] = {"type": self.type_name, "message": self.message, "retryable": self.retryable}
        if self.field:
            body["field"] = self.field
        return body

    def http_headers(self) -> dict[str, str]:
        """Extra response headers this error asks for (none by default)."""
        return {}


class InvalidInput(GpuqError):
    """Bad input from a caller; names the offending field."""

    status_code = 422
    type_name = "invalid_input"


class Unauthorized(GpuqError):
    status_code = 401
    type_name = "unauthorized"


class NotFound(GpuqError):
    status_code = 404
    type_name = "not_found"


class Conflict(GpuqError):
    status_code = 409
    type_name = "conflict"


class PayloadTooLarge(GpuqError):
    status_code = 413
    type_name = "payload_too_large"


class RateLimited(GpuqError):
    """A tenant quota is exhausted; ``retry_after_s`` says when trying again makes sense."""

    status_code = 429
    retryable = True
    type_name = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s

    def http_headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class _AboutJob(GpuqError):
    """An HTTP error about one job: the body names it and ``Location`` points at it."""

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        if self.extra.get("job_id"):
            body["job_id"] = self.extra["job_id"]
        return body

    def http_headers(self) -> dict[str, str]:
        job_id = self.extra.get("job_id")
        return {"Location": f"/v1/jobs/{job_id}"} if job_id else {}


class WaitTimeout(_AboutJob):
    """A request that waits for its job gave up; the job itself goes on."""

    status_code = 504
    retryable = True
    type_name = "wait_timeout"


class UpstreamJobFailed(_AboutJob):
    """A request that waits for its job (``/generate``) saw the job fail or get cancelled."""

    status_code = 502
    type_name = "job_failed"


class ServiceUnavailable(GpuqError):
    """A dependency (Redis, the broker) is down; the caller may retry."""

    status_code = 503
    retryable = True
    type_name = "service_unavailable"


class NotConfigured(GpuqError):
    """A feature this deployment has not set up (a setting is missing or names nothing): 503 naming the setting.

    Not the caller's fault, and not transient either: retrying helps only once an operator sets it.
    """

    status_code = 503
    type_name = "not_configured"


class ConfigError(GpuqError):
    """The deployment is misconfigured; raised at start-up."""

    type_name = "config_error"


class JobError(GpuqError):
    """Failure of a running job; recorded in the job record, never an HTTP status."""

    type_name = "job_error"


class JobCancelled(JobError):
    type_name = "cancelled"


class JobTimeout(JobError):
    type_name = "timeout"


class ModelLoadError(JobError):
    type_name = "model_load_error"


class ResourceExhausted(JobError):
    """Out of device or host memory; the job fails, the worker keeps serving."""

    type_name = "resource_exhausted"


class TransientJobError(JobError):
    """A failure worth retrying (network to the Hub, a lost lease)."""

    retryable = True
    type_name = "transient_error"


class WorkerLost(JobError):
    """The worker died under the job too many times (poison job)."""

    type_name = "worker_lost"


class JobInterrupted(JobError):
    """The worker is shutting down; the job goes back to the queue (after checkpointing if it can)."""

    retryable = True
    type_name = "interrupted"


class AttemptSuperseded(JobError):
    """This attempt lost the job (its lease lapsed and a later attempt took it over): it stops and writes
    nothing more, the job is the later attempt's."""

    type_name = "superseded"


# Admin routes (queue load for the autoscaler).
class Forbidden(GpuqError):
    """Authenticated, but this key may not use the route (a tenant key on an admin route)."""

    status_code = 403
    type_name = "forbidden"
