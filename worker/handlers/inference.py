"""Handler for the ``inference`` kind: find the task, keep its model resident, run the job's inputs through
the dynamic batcher chunk by chunk, and record how big a batch the job shared.
"""
from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpuq.common.files import get_file_store
from gpuq.common.jobs.inference import TaskParamsBase
from gpuq.common.settings import Settings
from gpuq.worker import adapters, telemetry
from gpuq.worker.batching import Limits, Request, get_batcher
from gpuq.worker.context import JobContext
from gpuq.worker.device import device, torch_dtype
from gpuq.worker.inference import InferenceTask, LoadSpec, get_task
from gpuq.worker.models import ModelKey, get_cache
from gpuq.worker.sizing import estimate_bytes

if TYPE_CHECKING:  # the engine imports torch; this module is imported before a job needs it
    from gpuq.worker.generation.serve import GenerationJob


def model_key(spec: LoadSpec, task: InferenceTask) -> ModelKey:
    """Cache key: tasks with the same loader share one resident copy of a model."""
    return ModelKey(spec.model, spec.revision, task.loader, str(torch_dtype(spec.dtype)), device())


def load_resident(ctx: JobContext, task: InferenceTask, spec: LoadSpec) -> Any:
    """The task's resident model (loaded on a miss, refused up front when it cannot fit the budget)."""
    def size_hint() -> int | None:
        return estimate_bytes(spec.model, spec.revision, torch_dtype(spec.dtype).itemsize)

    return ctx.resident(model_key(spec, task), lambda: task.load(spec), size_hint=size_hint)


def adapter_key(params: TaskParamsBase) -> str | None:
    """The adapter a job names (its stored ``params.adapter``): jobs with different adapters never share a
    forward pass, even on the same resident base.
    """
    adapter = params.adapter
    return None if adapter is None else json.dumps(adapter.model_dump(mode="json", exclude_none=True),
                                                   sort_keys=True, separators=(",", ":"))


def batch_key(key: ModelKey, task: InferenceTask, params: TaskParamsBase) -> Hashable:
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
    from gpuq.worker.inference import ALIASES, TASKS

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

    The job's adapter is resolved here, in the job's thread; it is activated on the resident base
    inside the forward pass, which the batcher's one executor thread runs: jobs in one pass share the adapter
    (it is part of the batch key), and passes never overlap, so switching adapters between passes is safe.
    """
    continuous = _start_continuous(ctx)
    if continuous is not None:
        return continuous.wait()  # (wait abandons the sequences if the job ends while it waits)
    batcher = get_batcher()
    with batcher.arriving() as arrival:
        job = _prepare(ctx)
        for start in range(0, len(job.items), job.size):
            done = batcher.submit(job.key, job.items[start:start + job.size], job.forward, job.limits,
                                  job_id=ctx.job_id, arrival=arrival, more=start + job.size < len(job.items),
                                  first_index=start)
            _collect(ctx, job, done)
            if len(job.items) > job.size:
                ctx.progress(len(job.outputs), len(job.items), unit="inputs")
    return _result(ctx, job)


def run_many(ctxs: list[JobContext]) -> list[Any]:
    """Run several jobs' inputs (one bulk-submitted group, worker/groups.py) through the batcher at once.

    Every chunk of every job is queued before any is waited for, so the group fills forward passes by
    itself; each job keeps its own outcome: a result, or the exception that failed only that job.
    """
    batcher = get_batcher()
    started: list[tuple[_Job, list[Request]] | GenerationJob | BaseException] = []
    outcomes: list[Any] = []
    try:
        with batcher.arriving():  # the executor waits for the whole group rather than run its first job alone
            for ctx in ctxs:
                started.append(_start_one(ctx, batcher))
        for ctx, begun in zip(ctxs, started):
            outcomes.append(_finish_one(ctx, batcher, begun))
    except BaseException:  # the group's time limit: generation jobs not waited for yet must not run on
        for begun in started[len(outcomes):]:
            if not isinstance(begun, (tuple, BaseException)):
                begun.abandon()
        raise
    return outcomes


def _start_one(ctx: JobContext, batcher: Any) -> tuple[_Job, list[Request]] | GenerationJob | BaseException:
    """A group member started: on the engine, queued in the batcher, or the exception that failed it."""
    try:
        continuous = _start_continuous(ctx)
        if continuous is not None:
            return continuous
        job = _prepare(ctx)
        return job, [batcher.enqueue(job.key, job.items[i:i + job.size], job.forward, job.limits,
                                     job_id=ctx.job_id, first_index=i) for i in range(0, len(job.items), job.size)]
    except Exception as exc:  # noqa: BLE001 - this job's failure, not the group's
        return exc


def _finish_one(ctx: JobContext, batcher: Any, begun: Any) -> Any:
    """A started group member's result, or the exception that failed it."""
    if isinstance(begun, BaseException):
        return begun
    try:
        return _finish_static(ctx, batcher, *begun) if isinstance(begun, tuple) else begun.wait()
    except Exception as exc:  # noqa: BLE001
        return exc


def _finish_static(ctx: JobContext, batcher: Any, job: _Job, requests: list[Request]) -> Any:
    for request in requests:
        _collect(ctx, job, batcher.wait(request))
    return _result(ctx, job)


def _start_continuous(ctx: JobContext) -> GenerationJob | None:
    """Submit a generation job to its model's continuous-batching engine; None: the static path runs it
    (another task, beam search, ``GPUQ_GENERATION_ENGINE=static``, a model or adapter the engine cannot run)."""
    from gpuq.worker.generation import serve

    params = ctx.params_as(TaskParamsBase)
    task = get_task(params.task)
    if not serve.serves(task, params, ctx.settings.generation_engine):
        return None
    from gpuq.worker.generation.resident import engine_for

    spec = LoadSpec(ctx.model, params.revision, params.dtype)
    resident = load_resident(ctx, task, spec)
    engine = engine_for(resident, model_key(spec, task), ctx.settings)
    return None if engine is None else serve.start(ctx, task, resident, engine)  # type: ignore[arg-type]


@dataclass
class _Job:
    """One job's inputs prepared for the batcher, and its outputs as its passes finish."""

    task: InferenceTask
    resident: Any
    params: TaskParamsBase
    items: list[Any]
    single: bool
    size: int
    key: Hashable
    limits: Limits
    forward: Any
    loaded_ms: list[float] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    jobs: int = 0
    shared: int = 0
    passes: int = 0


def _prepare(ctx: JobContext) -> _Job:
    """Resolve the task and model (loading it on a miss) and prepare the job's inputs for forward passes."""
    params = ctx.params_as(TaskParamsBase)
    task = get_task(params.task)
    items, single = task.split(ctx.inputs)
    inputs = resolve_uploads(ctx, items)
    spec = LoadSpec(ctx.model, params.revision, params.dtype)
    resident = load_resident(ctx, task, spec)
    source = adapters.source_for(ctx)
    loaded_ms: list[float] = []

    def forward(batch: list[Any], stream: Any) -> list[Any]:
        with adapters.activated(getattr(resident, "model", resident), source, ctx.settings.adapter_cache_max) as ms:
            if ms:
                loaded_ms.append(ms)
            out = task.forward(resident, batch, params, stream)
        telemetry.observe_batch(len(batch))
        return out

    return _Job(task, resident, params, task.prepare(resident, inputs, params), single,
                params.batch_size, batch_key(model_key(spec, task), task, params),
                limits_for(ctx.model, ctx.settings), forward, loaded_ms)


def _collect(ctx: JobContext, job: _Job, done: Request) -> None:
    """Take one finished pass's outputs (and log an adapter load it paid for)."""
    for ms in job.loaded_ms:
        ctx.log(f"adapter loaded in {ms:.0f} ms on the resident base", adapter_load_ms=round(ms, 3))
    job.loaded_ms.clear()
    job.outputs.extend(job.task.finish(job.resident, raw, job.params) for raw in done.outputs or [])
    job.jobs, job.shared = max(job.jobs, done.jobs_in_pass), max(job.shared, done.inputs_in_pass)
    job.passes += 1


def _result(ctx: JobContext, job: _Job) -> Any:
    ctx.record_fields["batch"] = {"jobs": job.jobs, "inputs": job.shared, "passes": job.passes}
    return job.outputs[0] if job.single else job.outputs
