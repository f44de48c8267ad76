"""``/v1/fine_tuning/jobs``: create, list, retrieve, ``events``, ``checkpoints``, ``cancel`` over finetune jobs.

A fine-tuning job is the finetune job itself (``ftjob-<job id>``: the same record, events and artifacts in
``/v1/jobs``); its events are the job's event stream, newest first; its checkpoints are the checkpoint folders
it holds while training and, once finished, the final adapter, whose ``ft:`` id chat/completions take at once.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from gpuq.api.deps import Jobs, SettingsDep, Tenant, artifact_store
from gpuq.api.openai import calls, catalog
from gpuq.api.openai.errors import OpenAIRoute
from gpuq.api.openai.fine_tuning.mapping import (
    FineTuneRequest,
    finetune_job,
    finetune_param,
    job_id_of,
    job_object,
)
from gpuq.api.openai.respond import json_answer
from gpuq.common import events, keys
from gpuq.common.errors import NotFound
from gpuq.common.records import JobStore
from gpuq.common.redis_client import loop_redis
from gpuq.common.schemas import JobEvent, JobRecord
from gpuq.common.settings import Settings

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["openai"], route_class=OpenAIRoute)
After = Annotated[str | None, Query(max_length=128)]
Limit = Annotated[int, Query(ge=1, le=100)]


@router.post("")
async def create_job(body: FineTuneRequest, request: Request, tenant: Tenant, jobs: Jobs,
                     settings: SettingsDep) -> Response:
    """Start a LoRA fine-tune of ``model`` on ``training_file`` (hyperparameters mapped: see mapping.py)."""
    return json_answer(await _create(body, request, tenant, jobs, settings))


@router.get("")
def list_jobs(tenant: Tenant, jobs: Jobs, settings: SettingsDep, after: After = None, limit: Limit = 20) -> Response:
    """The caller's fine-tuning jobs, newest first."""
    records = jobs.list_jobs(tenant, settings.max_list_limit, None, "finetune")
    ids = [r.id for r in records]
    if after is not None:
        records = records[ids.index(job_id_of(after)) + 1:] if job_id_of(after) in ids else []
    data = [job_object(r, _side(jobs, r.id), settings) for r in records[:limit]]
    return json_answer({"object": "list", "data": data, "has_more": len(records) > limit})


@router.get("/{job_id}")
def get_job(job_id: str, tenant: Tenant, jobs: Jobs, settings: SettingsDep) -> Response:
    """One fine-tuning job (404 for another tenant's)."""
    record = _record(jobs, job_id, tenant)
    return json_answer(job_object(record, _side(jobs, record.id), settings))


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, tenant: Tenant, jobs: Jobs, settings: SettingsDep) -> Response:
    """Cancel: a queued fine-tune never runs; a running one stops at its next step (keeping a checkpoint)."""
    record = _record(jobs, job_id, tenant)
    return json_answer(job_object(jobs.request_cancel(record.id, tenant), _side(jobs, record.id), settings))


@router.get("/{job_id}/events")
def list_events(job_id: str, tenant: Tenant, jobs: Jobs, after: After = None, limit: Limit = 20) -> Response:
    """The job's events as ``fine_tuning.job.event`` objects, newest first (``after``: an event id)."""
    record = _record(jobs, job_id, tenant)
    found = [_event(e) for e in reversed(events.read_all(jobs.r, record.id))]
    ids = [e["id"] for e in found]
    if after is not None:
        found = found[ids.index(after) + 1:] if after in ids else []
    return json_answer({"object": "list", "data": found[:limit], "has_more": len(found) > limit})


@router.get("/{job_id}/checkpoints")
def list_checkpoints(job_id: str, tenant: Tenant, jobs: Jobs, settings: SettingsDep, limit: Limit = 10) -> Response:
    """Checkpoints, newest first: those the job holds while it trains, the final adapter once it succeeded."""
    record = _record(jobs, job_id, tenant)
    found = _checkpoints(record, settings)
    return json_answer({"object": "list", "data": found[:limit], "has_more": len(found) > limit,
                        "first_id": found[0]["id"] if found else None, "last_id": found[-1]["id"] if found else None})


async def _create(body: FineTuneRequest, request: Request, tenant: str, jobs: JobStore, settings: Settings
                  ) -> dict[str, Any]:
    job = finetune_job(body, await catalog.resolve_on_loop(body.model, tenant, jobs, settings))
    done = await calls.accept(request, "fine_tuning", job, tenant, settings, finetune_param)
    side = {"model": body.model, "suffix": body.suffix or "", "metadata": json.dumps(body.metadata)}
    pipe = loop_redis().pipeline()
    pipe.hset(keys.openai_finetune(done.job_id), mapping=cast(Any, side))
    pipe.expire(keys.openai_finetune(done.job_id), settings.record_ttl_s)
    await pipe.execute()
    return job_object(done.record, _decoded_side(side), settings)


def _record(jobs: JobStore, job_id: str, tenant: str) -> JobRecord:
    record = jobs.get(job_id_of(job_id), tenant)
    if record.kind != "finetune":
        raise NotFound(f"fine-tuning job {job_id} not found", field="fine_tuning_job_id")
    return record


def _side(jobs: JobStore, job_id: str) -> dict[str, Any]:
    return _decoded_side(cast(dict[str, str], jobs.r.hgetall(keys.openai_finetune(job_id))))


def _decoded_side(raw: dict[str, str]) -> dict[str, Any]:
    return {**raw, "metadata": json.loads(raw["metadata"]) if raw.get("metadata") else None}


_MESSAGES = {"queued": "Job queued", "started": "Fine-tuning started", "completed": "The job has successfully "
             "completed", "cancelled": "The job was cancelled"}


def _event(event: JobEvent) -> dict[str, Any]:
    data, created = event.data, int(event.id.split("-")[0]) // 1000
    body: dict[str, Any] = {"id": f"ftevent-{event.id}", "object": "fine_tuning.job.event", "created_at": created,
                            "level": "error" if event.type == "failed" else "info", "type": "message", "data": data}
    if event.type == "progress" and data.get("unit") == "steps":
        evals = data.get("eval") or {}
        metrics = {k: v for k, v in {"step": data.get("done"), "total_steps": data.get("total"),
                                     "train_loss": data.get("loss"), "valid_loss": evals.get("eval_loss")}.items()
                   if v is not None}
        losses = ", ".join(f"{k}={metrics[k]:.4g}" for k in ("train_loss", "valid_loss") if k in metrics)
        return {**body, "type": "metrics", "data": metrics,
                "message": f"Step {data.get('done')}/{data.get('total')}" + (f": {losses}" if losses else "")}
    if event.type == "failed":
        return {**body, "message": str((data.get("error") or {}).get("message") or "The job failed")}
    message = data.get("message") if event.type == "log" else _MESSAGES.get(event.type, event.type)
    return {**body, "message": str(message)}


def _checkpoints(record: JobRecord, settings: Settings) -> list[dict[str, Any]]:
    store = artifact_store()
    found = []
    steps = sorted({int(a.name.split("/")[1].removeprefix("step-")) for a in store.list(record.tenant, record.id)
                    if a.name.startswith("checkpoints/step-") and a.name.endswith("/state.json")}, reverse=True)
    model = catalog.finetune_id(record.model, record.tenant, record.id, settings)
    if record.status == "succeeded":
        metrics = _final_metrics(record)
        found.append(_checkpoint(record, model, int(metrics.get("steps") or 0), metrics))
    found.extend(_checkpoint(record, f"{model}:ckpt-step-{s}", s, {}) for s in steps)
    return found


def _checkpoint(record: JobRecord, model: str, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"ftckpt-{record.id}-{step}", "object": "fine_tuning.job.checkpoint",
            "created_at": int(record.timings.finished_at or record.timings.started_at or 0),
            "fine_tuned_model_checkpoint": model, "fine_tuning_job_id": f"ftjob-{record.id}", "step_number": step,
            "metrics": {"step": step, "train_loss": metrics.get("train_loss"),
                        "valid_loss": metrics.get("eval_loss"), "full_valid_loss": metrics.get("eval_loss")}}


def _final_metrics(record: JobRecord) -> dict[str, Any]:
    try:
        path = artifact_store().local_path(record.tenant, record.id, "metrics.json")
    except NotFound:
        return {}
    value = json.loads(path.read_text())
    return value if isinstance(value, dict) else {}
