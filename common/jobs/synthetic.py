"""The ``synthetic`` job kind: a fixed-cost job with no model, for benchmarks and fault drills.

It runs a busy loop (fixed CPU cost, like a GPU kernel that holds its device) or sleeps, for a number of
steps with a progress point each, and can be told to fail in a chosen way. Refused when
``GPUQ_SYNTHETIC_JOBS`` is false (the default in prod).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.registry import JobSpec, Submitter, Validated, register, stored_variant


class SyntheticParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    steps: int = Field(1, ge=0, le=100_000)
    step_ms: float = Field(0.0, ge=0, le=60_000)
    mode: Literal["busy", "sleep"] = "sleep"
    fail: Literal["error", "transient", "oom", "crash", "hang", "hang_hard"] | None = None
    fail_at_step: int = Field(0, ge=0)
    result_bytes: int = Field(0, ge=0, le=50_000_000)
    alloc_mb: int = Field(0, ge=0, le=4096)
    report_memory: bool = False  # the worker's resident set in the result (a /proc read: not a no-op's work)


StoredSyntheticParams = stored_variant(SyntheticParams, "StoredSyntheticParams")


def check(model: str, inputs: Any, parsed: Any, who: Submitter) -> Validated:
    """Allow synthetic jobs only where enabled; ``model`` is a free label."""
    if not who.settings.synthetic_jobs:
        raise InvalidInput("kind 'synthetic' is disabled on this deployment", field="kind")
    return Validated(model=model, inputs=inputs, params=parsed.model_dump(exclude_none=True))


SPEC = register(JobSpec(
    kind="synthetic",
    queue="inference",
    params_model=SyntheticParams,
    check=check,
    stored_model=StoredSyntheticParams,
    time_limit_s=None,
    description="Fixed-cost job without a model (benchmarks, drills).",
))
