"""Data sets for training and evaluation jobs: an uploaded file or a Hub dataset, plus declarative preprocessing.

Shared by the ``finetune``, ``tokenizer`` and ``evaluate`` kinds, together with the per-job Hub token (sealed
at submit, like the push token) and the metric names the worker ships.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from gpuq.common.errors import InvalidInput
from gpuq.common.files import DATA_FORMATS, get_file_store
from gpuq.common.jobs.registry import Submitter
from gpuq.common.refs import HubId, Revision
from gpuq.common.secrets import seal

# A Hub dataset repo: the worker loads it from the Hub and its cache only, never a local directory so named.
DatasetId = HubId
__all__ = ["DataSource", "DatasetId", "MetricName", "Revision", "SealedHubToken", "check_data",
           "pick_columns", "seal_hub_token"]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._ -]{0,127}$")]
# The metrics shipped under worker/metrics (kept equal to worker.metrics.METRIC_NAMES by a test).
MetricName = Literal["accuracy", "f1", "precision", "recall", "bleu", "sacrebleu", "rouge"]


class DataSource(BaseModel):
    """Where rows come from and how they are prepared before tokenisation.

    Exactly one of ``file_id`` (an upload of this tenant) or ``dataset`` (a Hub dataset repo, pulled at a pinned
    commit). ``columns`` maps the names a job expects (``text``, ``label``, ``prompt``, ...) to the data's own.
    Without an eval split (``eval_split`` / ``eval_file_id``) one is carved out with ``train_test_split``.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    file_id: str | None = Field(None, max_length=64)
    dataset: DatasetId | None = None
    config: Name | None = None
    revision: Revision | None = None
    split: Name = "train"
    eval_split: Name | None = None
    eval_file_id: str | None = Field(None, max_length=64)
    columns: dict[Name, Name] = Field(default_factory=dict)
    min_length: int | None = Field(None, ge=0, description="drop rows whose text is shorter (characters)")
    max_length: int | None = Field(None, ge=1, description="drop rows whose text is longer (characters)")
    shuffle: bool = True
    seed: int = Field(42, ge=0, le=2**32 - 1)
    test_size: float = Field(0.1, ge=0, lt=1, description="eval share carved out when there is no eval split; "
                                                           "0 trains on every row")
    max_rows: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if (self.file_id is None) == (self.dataset is None):
            raise ValueError("give exactly one of file_id (an uploaded file) or dataset (a Hub dataset id)")
        if self.eval_file_id is not None and self.file_id is None:
            raise ValueError("eval_file_id needs file_id")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError("min_length is larger than max_length")
        return self


class SealedHubToken(BaseModel):
    """A job's ``hub_token`` as stored: sealed at submit (``seal_hub_token``), unsealed on the worker."""

    sealed_hub_token: str | None = None


def pick_columns(available: list[str], mapping: dict[str, str], alternatives: list[list[str]]) -> list[str] | None:
    """The first alternative set of canonical columns whose (mapped) names are all ``available``."""
    for names in alternatives:
        if all(mapping.get(c, c) in available for c in names):
            return names
    return None


def check_data(data: DataSource, who: Submitter, needs: list[list[str]], field: str = "params.data") -> dict[str, Any]:
    """Check that referenced files exist for this tenant and hold the needed columns; return the stored form.

    ``needs`` lists alternatives (e.g. prompt + completion, or text); a file must hold one of them.
    """
    store = get_file_store(who.settings.files_root)
    for name in ("file_id", "eval_file_id"):
        file_id = getattr(data, name)
        if file_id is None:
            continue
        info = store.expect(who.tenant, file_id, f"{field}.{name}", DATA_FORMATS)
        if pick_columns(info.columns, data.columns, needs) is None:
            wanted = " or ".join(str([data.columns.get(c, c) for c in alt]) for alt in needs)
            raise InvalidInput(f"{field}.columns: file {file_id} has no column(s) {wanted} (has {info.columns}); "
                               f"map them with columns", field=f"{field}.columns")
        if data.max_rows is None and info.rows and info.rows > who.settings.max_dataset_rows:
            raise InvalidInput(f"{field}.max_rows: file has {info.rows} rows, over the limit "
                               f"{who.settings.max_dataset_rows}", field=f"{field}.max_rows")
    return data.model_dump(exclude_none=True)


def seal_hub_token(params: dict[str, Any], token: SecretStr | None) -> dict[str, Any]:
    """Replace a clear per-job Hub token (for private pulls) with its sealed form."""
    params.pop("hub_token", None)
    if token is not None:
        params["sealed_hub_token"] = seal(token.get_secret_value())
    return params
