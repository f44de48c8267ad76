"""The rows of a batch-inference job, as Arrow: an uploaded or local parquet / jsonl / csv file, or a Hub
dataset."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from gpuq.common.errors import InvalidInput
from gpuq.common.files import get_file_store
from gpuq.common.jobs.batch_inference import FILE_FORMATS


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


def _hub(data: dict[str, Any]) -> Any:
    import datasets

    ds = datasets.load_dataset(data["dataset"], data.get("config"), split=data.get("split", "train"),
                               revision=data.get("revision"))
    return ds.data.table


def load_table(data: dict[str, Any], tenant: str, files_root: Path) -> Any:
    """The rows as a pyarrow Table, cut to ``max_rows``; ``file_id`` is an upload of ``tenant``."""
    if data.get("file_id"):
        table = _local(get_file_store(files_root).path(tenant, data["file_id"]))
    elif data.get("path"):
        table = _local(Path(data["path"]))
    else:
        table = _hub(data)
    limit = data.get("max_rows")
    return table.slice(0, limit) if limit else table


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
