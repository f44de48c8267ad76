"""One error tree for gpuq. HTTP status and retry policy are properties of the class."""
from __future__ import annotations

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
    status_code = 429
    retryable = True
    type_name = "rate_limited"


class ServiceUnavailable(GpuqError):
    """A dependency (Redis, the broker) is down; the caller may retry."""

    status_code = 503
    retryable = True
    type_name = "service_unavailable"


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


# Issue 4: admin routes (queue load for the autoscaler).
class Forbidden(GpuqError):
    """Authenticated, but this key may not use the route (a tenant key on an admin route)."""

    status_code = 403
    type_name = "forbidden"
