"""The rows of a batch-inference job, as Arrow: an uploaded or local parquet / jsonl / csv file, or a Hub
dataset."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from gpuq.common.errors import InvalidInput
from gpuq.common.files import get_file_store
from gpuq.common.jobs.batch_inference import FILE_FORMATS, DataSource
from gpuq.worker import hub
from gpuq.worker.context import JobContext
from gpuq.worker.sources import data_file, hub_dataset


def _local(path: Path) -> Any:
    fmt = FILE_FORMATS[path.suffix.lower()]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if fmt == "csv":
        import pyarrow.csv as pacsv

        return pacsv.read_csv(path)
    import pyarrow.json as pajson

    return pajson.read_json(path)


def _hub(ctx: JobContext, data: DataSource) -> Any:
    """A Hub dataset's split, loaded from the snapshot directory (pinned in the record), never by its name.

    A batch job takes no Hub token of its own: the pull uses the server's (``GPUQ_HF_TOKEN``), if any."""
    import datasets

    assert data.dataset is not None
    pinned = ctx.resolved.get("dataset", {}).get("sha")  # a redelivered job reads exactly the same commit
    pulled = hub_dataset(data.dataset, pinned or data.revision, hub.pull_token(None), "params.data.dataset")
    ctx.pin("dataset", **{**pulled.pin(), "revision": data.revision or "main"})
    ds = datasets.load_dataset(str(pulled.path), data.config, split=data.split)
    return ds.data.table


def load_table(ctx: JobContext, data: DataSource) -> Any:
    """The rows as a pyarrow Table, cut to ``max_rows``; ``file_id`` is an upload of the job's tenant."""
    if data.file_id:
        table = _local(get_file_store(ctx.settings.files_root).path(ctx.tenant, data.file_id))
    elif data.path:
        table = _local(data_file(data.path, "params.data.path"))
    else:
        table = _hub(ctx, data)
    return table.slice(0, data.max_rows) if data.max_rows else table


def _as_input(value: Any) -> Any:
    """Image columns (``{"bytes", "path"}`` structs or raw bytes) become base64 strings, as jobs send them."""
    if isinstance(value, dict) and "bytes" in value:
        value = value["bytes"]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    return value


def column_values(table: Any, name: str, start: int, stop: int, field: str) -> list[Any]:
    """Values of column ``name`` for rows [start, stop); a missing column names the params field."""
    if name not in table.column_names:
        raise InvalidInput(f"{field}: the data has no column {name!r} (has {table.column_names})",
                           field=field)
    return [_as_input(v) for v in table.column(name).slice(start, stop - start).to_pylist()]
