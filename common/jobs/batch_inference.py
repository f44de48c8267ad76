"""The ``batch_inference`` job kind: one inference task over every row of a dataset, one output per row.

A kind of its own rather than a mode of ``inference``: its input is a dataset reference instead of inline
inputs, it runs for minutes to hours (the default job time limit, not inference's 10 minutes), it reports rows
done / total, a bad row is recorded in the output instead of failing the job, and its result is a parquet
artifact rather than an inline value. It shares the inference tasks, their params (``params.inference`` is
exactly an ``inference`` job's params), the resident models, affinity routing and the dynamic batcher.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gpuq.common.errors import InvalidInput
from gpuq.common.files import DATA_FORMATS, get_file_store
from gpuq.common.jobs.inference import InferenceParams, StoredTaskParams
from gpuq.common.jobs.modelref import check_model_ref
from gpuq.common.jobs.registry import JobSpec, Submitter, Validated, register, stored_variant
from gpuq.common.refs import HubId, Revision, resolve_data_path

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._ -]{0,127}$")]
FILE_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv"}


class DataSource(BaseModel):
    """Rows to run over: a Hub dataset (``dataset`` + ``config`` + ``split``), an uploaded file of this tenant
    (``file_id``, from ``POST /v1/files``) or a local parquet / jsonl / csv file (``path``, absolute or
    relative to a root of ``GPUQ_DATASET_ROOTS`` or ``GPUQ_MODEL_ROOTS``). A Hub dataset id is loaded from the
    Hub and its cache only, never from a local directory of that name. ``column`` holds each row's input;
    tasks with structured inputs map their fields with ``columns`` (question-answering: question, context).
    """

    model_config = ConfigDict(extra="forbid")

    dataset: HubId | None = None
    config: Name | None = None
    revision: Revision | None = None
    split: Name = "train"
    path: str | None = Field(None, max_length=4096)
    file_id: str | None = Field(None, max_length=64)
    column: Name = "text"
    columns: dict[Name, Name] = Field(default_factory=dict)
    max_rows: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if sum(x is not None for x in (self.dataset, self.path, self.file_id)) != 1:
            raise ValueError("give exactly one of dataset (a Hub dataset id), file_id (an uploaded file) or path "
                             "(a local file)")
        return self


class BatchInferenceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: DataSource
    inference: InferenceParams


# The record's form: ``data.path`` resolved, ``data.max_rows`` capped, ``inference`` one task's stored params.
StoredDataSource = stored_variant(DataSource, "StoredDataSource")
StoredBatchInferenceParams = stored_variant(BatchInferenceParams, "StoredBatchInferenceParams",
                                            data=(StoredDataSource, ...), inference=(StoredTaskParams, ...))


def _check_upload(data: DataSource, file_id: str, who: Submitter) -> None:
    """The upload exists for this tenant, is a data file, and has the input column(s)."""
    store = get_file_store(who.settings.files_root)
    info = store.expect(who.tenant, file_id, "params.data.file_id", DATA_FORMATS)
    wanted = sorted(set(data.columns.values())) if data.columns else [data.column]
    missing = [c for c in wanted if c not in info.columns]
    if missing:
        field = "params.data.columns" if data.columns else "params.data.column"
        raise InvalidInput(f"{field}: file {file_id} has no column(s) {missing} (has {info.columns})",
                           field=field)


def check(model: str, inputs: Any, parsed: Any, who: Submitter) -> Validated:
    """Check the data source and the task's params; the rows themselves are read by the worker."""
    params: BatchInferenceParams = parsed
    if inputs not in (None, [], ""):
        raise InvalidInput("inputs: batch_inference reads its inputs from params.data, leave inputs out",
                           field="inputs")
    task = params.inference.root
    try:
        task.check_limits(who.settings)
    except InvalidInput as exc:
        field = (exc.field or "params").replace("params.", "params.inference.", 1)
        raise InvalidInput(exc.message.replace("params.", "params.inference.", 1), field=field) from None
    data = params.data.model_dump(exclude_none=True)
    if params.data.path is not None:
        data["path"] = str(resolve_data_path(params.data.path, who.settings, "params.data.path",
                                             tuple(FILE_FORMATS)))
    if params.data.file_id is not None:
        _check_upload(params.data, params.data.file_id, who)
    if params.data.max_rows is None or params.data.max_rows > who.settings.batch_inference_max_rows:
        data["max_rows"] = min(params.data.max_rows or who.settings.batch_inference_max_rows,
                               who.settings.batch_inference_max_rows)
    ref = check_model_ref(model, who.settings)
    return Validated(model=ref, inputs=None,
                     params={"data": data, "inference": task.model_dump(exclude_none=True)})


SPEC = register(JobSpec(
    kind="batch_inference",
    queue="inference",
    params_model=BatchInferenceParams,
    check=check,
    stored_model=StoredBatchInferenceParams,
    # Its own hour (like the other model kinds), not the global default: a dataset pass is long by nature.
    time_limit_s=3600,
    affinity=True,
    description="Run an inference task over a dataset (Hub, upload or local file): a parquet of one output per "
                "row.",
))
