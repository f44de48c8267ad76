"""Wire types shared by the API, the worker and clients."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
Priority = Literal["high", "normal", "low"]
EventType = Literal["queued", "started", "progress", "log", "output", "completed", "failed", "cancelled"]
TERMINAL_EVENTS: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class JobRequest(BaseModel):
    """Body of ``POST /v1/jobs``; kind-specific checks happen in the job registry."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=1024)
    inputs: Any = None
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "normal"


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


class BatchInfo(BaseModel):
    """How a job shared the model: the most jobs and inputs that went through one forward pass with it."""

    jobs: int = 1
    inputs: int = 1
    passes: int = 1


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
    batch: BatchInfo | None = None


class JobList(BaseModel):
    jobs: list[JobRecord]


class JobEvent(BaseModel):
    id: str
    type: EventType
    data: dict[str, Any] = Field(default_factory=dict)
