"""The OpenAI Batch API: ``POST /v1/batches``, ``GET /v1/batches[/{id}]``, ``POST /v1/batches/{id}/cancel``.

A batch names an uploaded JSONL file (purpose ``batch``) of ``/v1/chat/completions``, ``/v1/completions`` or
``/v1/embeddings`` requests; each line becomes a gpuq job submitted through the bulk path (grouped per model,
sharing forward passes, counted against the tenant's quota), and the output and error files are JSONL in the same
file store, as OpenAI writes them.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from gpuq.api.deps import Jobs, SettingsDep, Tenant
from gpuq.api.openai import retries
from gpuq.api.openai.batches import run
from gpuq.api.openai.batches.lines import ENDPOINTS
from gpuq.api.openai.batches.store import BatchStore, new_id
from gpuq.api.openai.errors import OpenAIRoute
from gpuq.api.openai.respond import json_answer
from gpuq.api.routes.files import file_store
from gpuq.common.errors import RateLimited, ServiceUnavailable
from gpuq.common.records import JobStore
from gpuq.common.settings import Settings
from pydantic import BaseModel, ConfigDict, Field

router = APIRouter(prefix="/v1/batches", tags=["openai"], route_class=OpenAIRoute)
Endpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
assert set(ENDPOINTS) == set(Endpoint.__args__)  # type: ignore[attr-defined]


class BatchCreate(BaseModel):
    """``POST /v1/batches``."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: Endpoint
    completion_window: Literal["24h"] = "24h"
    metadata: dict[str, str] | None = None
    output_expires_after: dict[str, Any] | None = None  # accepted: outputs live as long as other files


@router.post("")
async def create_batch(body: BatchCreate, request: Request, tenant: Tenant, jobs: Jobs,
                       settings: SettingsDep) -> Response:
    """Check the input file, store the batch and submit its lines as jobs."""
    attempt = await retries.attempt_of(request, "batches")
    return json_answer(await run_in_threadpool(_create, body, attempt, tenant, jobs, settings))


@router.get("")
async def list_batches(tenant: Tenant, jobs: Jobs, settings: SettingsDep, limit: int = Query(20, ge=1, le=100),
                       after: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    """The caller's batches, newest first."""
    return json_answer(await run_in_threadpool(_page, tenant, jobs, settings, limit, after))


@router.get("/{batch_id}")
async def get_batch(batch_id: str, tenant: Tenant, jobs: Jobs, settings: SettingsDep) -> Response:
    """One batch (404 for another tenant's)."""
    return json_answer(await run_in_threadpool(_view, batch_id, tenant, jobs, settings))


@router.post("/{batch_id}/cancel")
async def cancel_batch(batch_id: str, tenant: Tenant, jobs: Jobs, settings: SettingsDep) -> Response:
    """Cancel the batch's unfinished jobs; it is ``cancelling`` until they have stopped, then ``cancelled``."""
    return json_answer(await run_in_threadpool(_cancel, batch_id, tenant, jobs, settings))


def _create(body: BatchCreate, attempt: retries.Attempt, tenant: str, jobs: JobStore,
            settings: Settings) -> dict[str, Any]:
    store, files = BatchStore(jobs.r, settings), file_store()
    batch_id = retries.earlier(jobs.r, tenant, attempt, keyed=True)
    if batch_id is None:
        custom_ids = run.check_input(files, tenant, body.input_file_id, body.endpoint)
        batch_id = new_id()
        store.create(batch_id, tenant, {"endpoint": body.endpoint, "input_file_id": body.input_file_id,
                                        "completion_window": body.completion_window, "metadata": body.metadata,
                                        "custom_ids": custom_ids})
        retries.remember(jobs.r, tenant, attempt, batch_id, settings, keyed=True)
    batch = store.get(batch_id, tenant)
    run.launch(store, batch, jobs, files, settings)
    return run.view(store, store.get(batch_id, tenant), files, settings)


def _view(batch_id: str, tenant: str, jobs: JobStore, settings: Settings) -> dict[str, Any]:
    store, files = BatchStore(jobs.r, settings), file_store()
    batch = store.get(batch_id, tenant)
    if batch.get("jobs") is None:  # its launch was refused (over quota, the broker down): try again now
        try:
            run.launch(store, batch, jobs, files, settings)
        except (RateLimited, ServiceUnavailable):
            pass
        batch = store.get(batch_id, tenant)
    return run.view(store, batch, files, settings)


def _page(tenant: str, jobs: JobStore, settings: Settings, limit: int, after: str | None) -> dict[str, Any]:
    store = BatchStore(jobs.r, settings)
    ids, more = store.page(tenant, limit, after)
    data = [run.view(store, store.get(i, tenant), file_store(), settings) for i in ids]
    return {"object": "list", "data": data, "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None, "has_more": more}


def _cancel(batch_id: str, tenant: str, jobs: JobStore, settings: Settings) -> dict[str, Any]:
    store = BatchStore(jobs.r, settings)
    run.cancel(store, store.get(batch_id, tenant), jobs)
    return _view(batch_id, tenant, jobs, settings)
