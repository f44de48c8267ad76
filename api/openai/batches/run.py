"""A batch's life: launched (each line mapped like its live route, refused alone when it is bad, the rest
submitted through the bulk path), followed (member job statuses), finalized once every member has ended (the
output and error JSONL files written into the file store, as OpenAI writes them), or cancelled.

Finalizing happens on the first read that finds every member ended; a claim keeps it to one API process.
"""
from __future__ import annotations

import io
import time
from typing import Any, cast

import orjson
from gpuq.api import bulk
from gpuq.api.openai import calls, catalog
from gpuq.api.openai.batches.endpoints import ENDPOINTS, Endpoint, light, revived
from gpuq.api.openai.batches.lines import read_lines
from gpuq.api.openai.batches.store import BatchStore
from gpuq.api.openai.errors import error_body, openai_status
from gpuq.api.submission import prepare
from gpuq.common.errors import Conflict, GpuqError, InvalidInput
from gpuq.common.files import FileStore
from gpuq.common.records import JobStore
from gpuq.common.schemas import TERMINAL_STATUSES, ErrorInfo, JobRequest
from gpuq.common.settings import Settings
from pydantic import BaseModel, ValidationError

HOLD_S = 120  # how long a launch or finalize claim keeps others out (a crashed holder is retried after it)
OUTPUT_MAX_BYTES = 1 << 40


def check_input(files: FileStore, tenant: str, file_id: str, endpoint: str) -> list[str]:
    """The custom ids of a batch input file whose every line is for ``endpoint``; 404 for another tenant's."""
    info = files.get(tenant, file_id)
    if info.purpose != "batch":
        raise InvalidInput(f"input_file_id: file {file_id} has purpose {info.purpose or 'user_data'}, not batch",
                           field="input_file_id")
    lines = read_lines(files.path(tenant, file_id))
    for number, line in enumerate(lines, 1):
        if line.url != endpoint:
            raise InvalidInput(f"input_file_id: line {number} is for {line.url}, the batch for {endpoint}",
                               field="input_file_id")
    return [line.custom_id for line in lines]


def launch(store: BatchStore, batch: dict[str, Any], jobs: JobStore, files: FileStore, settings: Settings) -> None:
    """Submit the batch's lines as jobs (at most once: the bulk path's idempotency keys make a relaunch after a
    crash replay what was accepted); a line that does not map or validate is refused on its own."""
    batch_id, tenant = batch["id"], batch["tenant"]
    if batch.get("jobs") is not None or not store.claim(batch_id, "launch", HOLD_S):
        return
    endpoint = ENDPOINTS[batch["endpoint"]]
    lines = read_lines(files.path(tenant, batch["input_file_id"]))
    models: dict[str, catalog.Resolved] = {}
    bodies: list[JobRequest] = []
    index: list[int] = []
    kept: list[dict[str, Any]] = [{} for _ in lines]
    refused: dict[str, dict[str, Any]] = {}
    for i, line in enumerate(lines):
        try:
            request, body = _mapped(endpoint, line.body, models, tenant, jobs, settings)
        except GpuqError as exc:
            refused[str(i)] = _refusal(calls.renamed(exc, endpoint.param))
            continue
        bodies.append(body)
        index.append(i)
        kept[i] = light(endpoint, request)
    ids = [""] * len(lines)
    try:
        for start in range(0, len(bodies), settings.bulk_max_jobs):
            done = bulk.submit_many(bodies[start:start + settings.bulk_max_jobs], tenant, jobs, settings,
                                    f"{batch_id}#{start}")
            for k, submitted in enumerate(done):
                ids[index[start + k]] = submitted.job_id
    except GpuqError:
        store.release(batch_id, "launch")  # a retry may launch it again (after a 429, a 503)
        raise
    store.update(batch_id, {"jobs": ids, "refused": refused, "requests": kept, "in_progress_at": int(time.time()),
                            "model": next((k.get("model") for k in kept if k), "")})


def _mapped(endpoint: Endpoint, body: dict[str, Any], models: dict[str, catalog.Resolved], tenant: str,
            jobs: JobStore, settings: Settings) -> tuple[BaseModel, JobRequest]:
    try:
        request = endpoint.request.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidInput(f"{param or 'body'}: {first['msg']}", field=param) from None
    name = str(cast(Any, request).model)
    if name not in models:
        models[name] = catalog.resolve(name, tenant, jobs, settings)
    job = endpoint.job(request, models[name], settings)
    prepare(job, tenant, settings)  # the kind's checks now, so one bad line never refuses the others
    return request, job


def _refusal(exc: GpuqError) -> dict[str, Any]:
    status = openai_status(exc)
    return {"status_code": status, "body": error_body(exc, status, shared=False)}


def view(store: BatchStore, batch: dict[str, Any], files: FileStore, settings: Settings) -> dict[str, Any]:
    """The batch object (finalizing it first when every member has ended)."""
    if batch.get("jobs") is None:
        return _object(batch, "validating", {"total": len(batch["custom_ids"]), "completed": 0, "failed": 0})
    members = [j for j in batch["jobs"] if j]
    statuses = store.statuses(members)
    pending = sum(1 for s in statuses if s is not None and s not in TERMINAL_STATUSES)
    counts = {"total": len(batch["jobs"]), "completed": statuses.count("succeeded"),
              "failed": len(batch["refused"]) + sum(1 for s in statuses if s in ("failed", None))}
    if pending:
        return _object(batch, "cancelling" if batch.get("cancelling_at") else "in_progress", counts)
    if not (batch.get("completed_at") or batch.get("cancelled_at")):
        if not finalize(store, batch, files):
            return _object(batch, "finalizing", counts)
        batch = store.get(batch["id"], batch["tenant"])
    return _object(batch, "cancelled" if batch.get("cancelled_at") else "completed", counts)


def _object(batch: dict[str, Any], status: str, counts: dict[str, int]) -> dict[str, Any]:
    created = int(batch["created_at"])
    times = {k: batch.get(k) for k in ("in_progress_at", "finalizing_at", "completed_at", "cancelling_at",
                                       "cancelled_at")}
    return {"id": batch["id"], "object": "batch", "endpoint": batch["endpoint"], "errors": None,
            "input_file_id": batch["input_file_id"], "completion_window": batch["completion_window"],
            "status": status, "output_file_id": batch.get("output_file_id"),
            "error_file_id": batch.get("error_file_id"), "created_at": created, "expires_at": created + 86400,
            "failed_at": None, "expired_at": None, **times, "request_counts": counts,
            "metadata": batch.get("metadata"), "model": batch.get("model") or None}


def finalize(store: BatchStore, batch: dict[str, Any], files: FileStore) -> bool:
    """Write the output and error files of a batch whose members have all ended; False while another process
    is at it."""
    batch_id, tenant = batch["id"], batch["tenant"]
    if not store.claim(batch_id, "finalize", HOLD_S):
        return False
    store.update(batch_id, {"finalizing_at": int(time.time())})
    endpoint = ENDPOINTS[batch["endpoint"]]
    members = [j for j in batch["jobs"] if j]
    raws = dict(zip(members, store.finished(members)))
    out: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i, (custom_id, job_id) in enumerate(zip(batch["custom_ids"], batch["jobs"])):
        ok, line = _output_line(endpoint, batch, i, custom_id, job_id, raws.get(job_id))
        (out if ok else errors).append(line)
    fields: dict[str, Any] = {"output_file_id": _write(files, tenant, f"{batch_id}_output.jsonl", out),
                              "error_file_id": _write(files, tenant, f"{batch_id}_error.jsonl", errors)}
    fields["cancelled_at" if batch.get("cancelling_at") else "completed_at"] = int(time.time())
    store.update(batch_id, fields)
    return True


def _output_line(endpoint: Endpoint, batch: dict[str, Any], i: int, custom_id: str, job_id: str,
                 raw: dict[str, Any] | None) -> tuple[bool, dict[str, Any]]:
    """(succeeded, the line): ``{id, custom_id, response: {status_code, request_id, body}, error}``."""
    line: dict[str, Any] = {"id": f"batch_req_{job_id or batch['id'][6:] + f'_{i}'}", "custom_id": custom_id,
                            "response": None, "error": None}
    if not job_id:
        refused = batch["refused"][str(i)]
        line["response"] = {**refused, "request_id": None}
        return False, line
    status = (raw or {}).get("status")
    if status == "cancelled" or status not in TERMINAL_STATUSES:
        line["error"] = {"code": "batch_cancelled" if batch.get("cancelling_at") else "cancelled",
                         "message": f"job {job_id} was cancelled before it finished"}
        return False, line
    assert raw is not None
    try:
        if status != "succeeded":
            error = ErrorInfo.model_validate(orjson.loads(raw["error"])) if raw.get("error") else None
            raise calls.failure_of(job_id, status, error, endpoint.param)
        created = int(orjson.loads(raw.get("timings") or "{}").get("submitted_at") or 0)
        result = calls.decoded_result(batch["tenant"], job_id, raw.get("result"))
        body = endpoint.answer(job_id, created, revived(endpoint, batch["requests"][i]), result)
    except GpuqError as exc:
        line["response"] = {**_refusal(exc), "request_id": job_id}
        return False, line
    line["response"] = {"status_code": 200, "request_id": job_id, "body": body}
    return True, line


def _write(files: FileStore, tenant: str, name: str, lines: list[dict[str, Any]]) -> str | None:
    if not lines:
        return None
    data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    return files.save(tenant, name, io.BytesIO(data), "jsonl", OUTPUT_MAX_BYTES, purpose="batch_output").id


def cancel(store: BatchStore, batch: dict[str, Any], jobs: JobStore) -> None:
    """Stop the batch: queued members never run, running ones stop at their next progress point."""
    if batch.get("completed_at") or batch.get("cancelled_at"):
        raise Conflict(f"batch {batch['id']} has already ended", field="batch_id")
    store.update(batch["id"], {"cancelling_at": int(time.time())})
    members = [j for j in batch.get("jobs") or [] if j]
    for job_id, status in zip(members, store.statuses(members)):
        if status is not None and status not in TERMINAL_STATUSES:
            calls.cancel_quietly(jobs, job_id, batch["tenant"])
