"""Wire types shared by the API, the worker and clients."""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
Priority = Literal["high", "normal", "low"]
EventType = Literal["queued", "started", "progress", "log", "output", "completed", "failed", "cancelled"]
TERMINAL_EVENTS: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


MAX_JSON_DEPTH = 32


def check_json_value(value: Any, depth: int = 0, finite: bool = True) -> Any:
    """Refuse absurd nesting, lone surrogates and (with ``finite``) NaN/infinity in a free-form JSON value."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if finite and isinstance(value, float) and not math.isfinite(value):
        raise ValueError("NaN and infinite numbers are not allowed")
    if isinstance(value, str):
        _check_text(value)
    if isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            check_json_value(item, depth + 1, finite)
    elif isinstance(value, list):
        for item in value:
            check_json_value(item, depth + 1, finite)
    return value


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text contains a lone surrogate (not valid Unicode)") from None


WEBHOOK_DEFAULT_EVENTS: tuple[EventType, ...] = ("completed", "failed", "cancelled")


class WebhookSpec(BaseModel):
    """Where to POST a job's events: signed with the tenant's secret, retried, never blocking the job."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)
    events: list[EventType] = Field(default_factory=lambda: list(WEBHOOK_DEFAULT_EVENTS), min_length=1,
                                    max_length=8)


class JobRequest(BaseModel):
    """Body of ``POST /v1/jobs``; kind-specific checks happen in the job registry."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=1024)
    inputs: Any = None
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "normal"
    webhook: WebhookSpec | None = None

    @field_validator("model")
    @classmethod
    def _no_control_chars(cls, value: str) -> str:
        from gpuq.common.refs import control_char

        bad = control_char(value)
        if bad is not None:
            raise ValueError(f"control character {bad} is not allowed in a reference")
        return value

    @field_validator("inputs")
    @classmethod
    def _finite_and_shallow(cls, value: Any) -> Any:
        return check_json_value(value)

    @field_validator("params")
    @classmethod
    def _shallow(cls, value: Any) -> Any:
        # NaN/infinity in params are refused by each kind's params model (allow_inf_nan=False), which can
        # name the exact field; here only nesting and text are checked.
        return check_json_value(value, finite=False)


class ErrorInfo(BaseModel):
    type: str
    message: str
    retryable: bool = False
    field: str | None = None


class ArtifactInfo(BaseModel):
    name: str
    size: int
    sha256: str
    content_type: str = "application/octet-stream"


class Timings(BaseModel):
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    queue_wait_ms: float | None = None
    model_load_ms: float | None = None
    run_ms: float | None = None
    # Part of run_ms spent reporting progress: events, cancellation checks, previews.
    progress_ms: float | None = None
    # CPU time of the worker process during the job (model loading included); see worker/runner.py.
    cpu_ms: float | None = None


class BatchInfo(BaseModel):
    """How a job shared the model: the most jobs and inputs that went through one forward pass with it."""

    jobs: int = 1
    inputs: int = 1
    passes: int = 1
    group: int = 1  # jobs delivered in the same Celery message (a bulk submit's or coalesced submits' group)


class JobRecord(BaseModel):
    """The job as the API serves it: the single source of truth kept in Redis."""

    id: str
    tenant: str
    kind: str
    model: str
    queue: str
    priority: Priority = "normal"
    status: JobStatus
    params: dict[str, Any] = Field(default_factory=dict)
    progress: dict[str, Any] | None = None
    result: Any = None
    error: ErrorInfo | None = None
    artifacts: list[ArtifactInfo] = Field(default_factory=list)
    worker: str | None = None
    attempts: int = 0
    cancel_requested: bool = False
    timings: Timings = Field(default_factory=Timings)
    webhook: WebhookSpec | None = None
    # Hub revisions a job pulled, pinned to commit shas: {"model": {"repo_id", "revision", "sha"}, ...}
    resolved: dict[str, Any] | None = None
    batch: BatchInfo | None = None


class JobList(BaseModel):
    jobs: list[JobRecord]


class BulkJobRequest(BaseModel):
    """Body of ``POST /v1/jobs/batch``: jobs submitted together (at most ``GPUQ_BULK_MAX_JOBS``)."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobRequest] = Field(min_length=1)


class JobEvent(BaseModel):
    id: str
    type: EventType
    data: dict[str, Any] = Field(default_factory=dict)


class KindInfo(BaseModel):
    """A registered job kind, as ``GET /v1/kinds`` lists it."""

    kind: str
    queue: str
    description: str = ""


class KindList(BaseModel):
    kinds: list[KindInfo]
