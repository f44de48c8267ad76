"""Handler for the ``inference`` kind: find the task, keep its model resident, run the job's inputs through
the dynamic batcher chunk by chunk, and record how big a batch the job shared.
"""
from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

from common.files import get_file_store
from common.settings import Settings
from worker import adapters, telemetry
from worker.batching import Limits, get_batcher
from worker.context import JobContext
from worker.device import device, torch_dtype
from worker.inference import InferenceTask, LoadSpec, get_task
from worker.models import ModelKey, get_cache
from worker.sizing import estimate_bytes


def model_key(spec: LoadSpec, task: InferenceTask) -> ModelKey:
    """Cache key: tasks with the same loader share one resident copy of a model."""
    return ModelKey(spec.model, spec.revision, task.loader, str(torch_dtype(spec.dtype)), device())


def load_resident(ctx: JobContext, task: InferenceTask, spec: LoadSpec) -> Any:
    """The task's resident model (loaded on a miss, refused up front when it cannot fit the budget)."""
    def size_hint() -> int | None:
        return estimate_bytes(spec.model, spec.revision, torch_dtype(spec.dtype).itemsize)

    return ctx.resident(model_key(spec, task), lambda: task.load(spec), size_hint=size_hint)


def adapter_key(params: dict[str, Any]) -> str | None:
    """The adapter a job names (issue 7 stores it as ``params.adapter``): jobs with different adapters never
    share a forward pass, even on the same resident base.
    """
    adapter = params.get("adapter")
    return None if adapter is None else json.dumps(adapter, sort_keys=True, separators=(",", ":"))


def batch_key(key: ModelKey, task: InferenceTask, params: dict[str, Any]) -> Hashable:
    """What two jobs must share to run in one forward pass."""
    return key, adapter_key(params), task.name, task.group(params)


def limits_for(model: str, settings: Settings) -> Limits:
    """``GPUQ_BATCH_MAX_SIZE`` / ``GPUQ_BATCH_MAX_WAIT_MS``, or the model's ``GPUQ_BATCH_OVERRIDES`` entry."""
    override = settings.batch_overrides.get(model)
    size = override.max_batch_size if override and override.max_batch_size else settings.batch_max_size
    wait = settings.batch_max_wait_ms
    if override and override.max_wait_ms is not None:
        wait = override.max_wait_ms
    return Limits(size, wait / 1000)


def _preload_tasks() -> frozenset[str]:
    from worker.inference import ALIASES, TASKS

    return frozenset(TASKS) | frozenset(ALIASES)


# GPUQ_PRELOAD entries this handler can load (worker/preload.py).
PRELOAD_TASKS = _preload_tasks()


def preload(model: str, task: str) -> None:
    """Load ``model`` for ``task`` under the key a default job uses, and pin it (never evicted)."""
    found, spec = get_task(task), LoadSpec(model, None, "auto")
    size = estimate_bytes(model, None, torch_dtype("auto").itemsize)
    get_cache().get(model_key(spec, found), lambda: found.load(spec), size_hint=size, pin=True)


def resolve_uploads(ctx: JobContext, inputs: list[Any]) -> list[Any]:
    """Inputs that name an upload (``{"file_id": ...}``, checked at submit) as the file's bytes."""
    if not any(isinstance(x, dict) and set(x) == {"file_id"} for x in inputs):
        return inputs
    files = get_file_store(ctx.settings.files_root)
    return [files.path(ctx.tenant, x["file_id"]).read_bytes() if isinstance(x, dict) and set(x) == {"file_id"}
            else x for x in inputs]


def run(ctx: JobContext) -> Any:
    """Run the job's inputs through its task; a single (non-list) input gets a single result back.

    The job's adapter (issue 7) is resolved here, in the job's thread; it is activated on the resident base
    inside the forward pass, which the batcher's one executor thread runs: jobs in one pass share the adapter
    (it is part of the batch key), and passes never overlap, so switching adapters between passes is safe.
    """
    params = ctx.params
    task = get_task(params["task"])
    single = not isinstance(ctx.inputs, list)
    inputs = resolve_uploads(ctx, [ctx.inputs] if single else list(ctx.inputs))
    spec = LoadSpec(ctx.model, params.get("revision"), params.get("dtype", "auto"))
    batcher, size = get_batcher(), int(params.get("batch_size", 8))
    with batcher.arriving() as arrival:
        resident = load_resident(ctx, task, spec)
        source = adapters.source_for(ctx)
        items = task.prepare(resident, inputs, params)
        key = batch_key(model_key(spec, task), task, params)
        limits = limits_for(ctx.model, ctx.settings)
        loaded_ms: list[float] = []

        def forward(batch: list[Any], stream: Any) -> list[Any]:
            with adapters.activated(getattr(resident, "model", resident), source, ctx.settings.adapter_cache_max) as ms:
                if ms:
                    loaded_ms.append(ms)
                out = task.forward(resident, batch, params, stream)
            telemetry.observe_batch(len(batch))
            return out

        outputs: list[Any] = []
        jobs = shared = passes = 0
        for start in range(0, len(items), size):
            done = batcher.submit(key, items[start:start + size], forward, limits, job_id=ctx.job_id,
                                  arrival=arrival, more=start + size < len(items), first_index=start)
            for ms in loaded_ms:
                ctx.log(f"adapter loaded in {ms:.0f} ms on the resident base", adapter_load_ms=round(ms, 3))
            loaded_ms.clear()
            outputs.extend(task.finish(resident, raw, params) for raw in done.outputs or [])
            jobs, shared, passes = max(jobs, done.jobs_in_pass), max(shared, done.inputs_in_pass), passes + 1
            if len(items) > size:
                ctx.progress(len(outputs), len(items), unit="inputs")
    ctx.record_fields["batch"] = {"jobs": jobs, "inputs": shared, "passes": passes}
    return outputs[0] if single else outputs
