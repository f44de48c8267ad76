"""Handler for ``batch_inference``: stream a dataset's rows through an inference task into a parquet artifact.

Rows go to the dynamic batcher in chunks of the batch size (so they share forward passes with online jobs of
the same model), outputs are appended to a parquet file chunk by chunk (memory stays bounded), and progress is
reported as rows done / total after each chunk. A row that fails (empty text, an unreadable image) gets its
error in the ``error`` column; the job still succeeds. The artifact ``outputs.parquet`` has columns ``row``
(index in the source), ``output`` (the task's JSON result for that row) and ``error``.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from gpuq.common.errors import GpuqError, InvalidInput
from gpuq.common.jobs.batch_inference import DataSource, StoredBatchInferenceParams
from gpuq.worker.batching import get_batcher
from gpuq.worker.context import JobContext
from gpuq.worker.dataset_rows import column_values, load_table
from gpuq.worker.handlers.inference import batch_key, limits_for, load_resident, model_key
from gpuq.worker.inference import LoadSpec, get_task

ARTIFACT = "outputs.parquet"


def _inputs(table: Any, start: int, stop: int, data: DataSource, task: str) -> list[Any]:
    if task == "question-answering":
        names = {field: data.columns.get(field, field) for field in ("question", "context")}
        cols = {field: column_values(table, name, start, stop, f"params.data.columns.{field}")
                for field, name in names.items()}
        return [{"question": q, "context": c} for q, c in zip(cols["question"], cols["context"])]
    return column_values(table, data.column, start, stop, "params.data.column")


def _prepare_rows(task: Any, resident: Any, rows: list[Any],
                  params: Any) -> tuple[list[Any], list[str | None]]:
    """Prepare each row alone, so one bad row is an error in its own output row, not the job's failure."""
    items: list[Any] = []
    errors: list[str | None] = []
    for value in rows:
        try:
            if value is None or (isinstance(value, str) and not value.strip()):
                raise InvalidInput("empty input")
            items.append(task.prepare(resident, [value], params)[0])
            errors.append(None)
        except GpuqError as exc:
            items.append(None)
            errors.append(exc.message)
    return items, errors


def _forward(batcher: Any, key: Any, items: list[Any], forward: Any, limits: Any, job_id: str, arrival: Any,
             more: bool) -> list[tuple[Any, str | None]]:
    """(raw output, error) per item: the chunk in one request, or row by row if the chunk fails as a whole."""
    try:
        done = batcher.submit(key, items, forward, limits, job_id=job_id, arrival=arrival, more=more)
        return [(raw, None) for raw in done.outputs or []]
    except Exception:
        if len(items) == 1:
            raise
    out: list[tuple[Any, str | None]] = []
    for item in items:
        try:
            out.append((batcher.submit(key, [item], forward, limits, job_id=job_id).outputs[0], None))
        except Exception as exc:  # noqa: BLE001 - recorded in the row's error column
            out.append((None, f"{type(exc).__name__}: {str(exc)[:300]}"))
    return out


def run(ctx: JobContext) -> Any:
    """Run ``params.inference`` over ``params.data``; returns row counts and the artifact name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stored = ctx.params_as(StoredBatchInferenceParams)
    data, params = stored.data, stored.inference
    task = get_task(params.task)
    table = load_table(ctx, data)
    total = table.num_rows
    spec = LoadSpec(ctx.model, params.revision, params.dtype)
    limits = limits_for(ctx.model, ctx.settings)
    chunk = max(params.batch_size, limits.max_items)
    schema = pa.schema([("row", pa.int64()), ("output", pa.string()), ("error", pa.string())])
    batcher, failed = get_batcher(), 0
    with tempfile.TemporaryDirectory(prefix="gpuq-batch-") as tmp, batcher.arriving() as arrival:
        path = Path(tmp) / ARTIFACT
        resident = load_resident(ctx, task, spec)
        key = batch_key(model_key(spec, task), task, params)

        def forward(batch: list[Any], stream: Any) -> list[Any]:
            return task.forward(resident, batch, params, stream)

        with pq.ParquetWriter(path, schema) as writer:
            for start in range(0, total, chunk):
                stop = min(start + chunk, total)
                rows = _inputs(table, start, stop, data, params.task)
                items, errors = _prepare_rows(task, resident, rows, params)
                good = [i for i, item in enumerate(items) if item is not None]
                outputs: list[str | None] = [None] * len(items)
                if good:
                    raws = _forward(batcher, key, [items[i] for i in good], forward, limits, ctx.job_id,
                                    arrival, stop < total)
                    for i, (raw, error) in zip(good, raws):
                        if error is None:
                            outputs[i] = json.dumps(task.finish(resident, raw, params), separators=(",", ":"))
                        errors[i] = error
                failed += sum(e is not None for e in errors)
                columns = {"row": list(range(start, stop)), "output": outputs, "error": errors}
                writer.write_table(pa.table(columns, schema=schema))
                ctx.progress(stop, total, unit="rows")
        info = ctx.put_artifact_file(ARTIFACT, path)
    return {"rows": total, "failed_rows": failed, "artifact": info.name, "bytes": info.size,
            "columns": ["row", "output", "error"]}
