"""The ``evaluate`` job kind: run a model (optionally with an adapter) over a data split and compute metrics.

Metrics are the modules gpuq ships (accuracy, f1, precision, recall for classifiers; bleu, sacrebleu, rouge
for generated text); predictions are kept as the artifact ``predictions.jsonl``.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.adapterref import AdapterRef, StoredAdapterRef, check_adapter
from gpuq.common.jobs.datasource import (DataSource, MetricName, Revision, SealedHubToken, check_data,
                                         seal_hub_token)
from gpuq.common.jobs.modelref import check_model_ref
from gpuq.common.jobs.registry import JobSpec, Submitter, Validated, register, stored_variant

CLASSIFICATION_METRICS = frozenset({"accuracy", "f1", "precision", "recall"})
DEFAULT_METRICS: dict[str, list[str]] = {"sequence-classification": ["accuracy", "f1"],
                                         "causal-lm": ["bleu", "rouge"], "seq2seq": ["bleu", "rouge"]}


class EvaluateParams(BaseModel):
    """Params of an evaluation job; ``data.split`` is evaluated whole (no train/test split)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    task_type: Literal["sequence-classification", "causal-lm", "seq2seq"]
    data: DataSource
    metrics: list[MetricName] = Field(default_factory=list)
    adapter: AdapterRef | None = None
    revision: Revision | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int = Field(16, ge=1, le=1024)
    max_length: int = Field(512, ge=8, le=131_072)
    max_new_tokens: int = Field(32, ge=1, le=4096)
    hub_token: SecretStr | None = None


# The record's form: metrics resolved (never empty), adapter resolved with its token sealed, Hub token sealed.
StoredEvaluateParams = stored_variant(EvaluateParams, "StoredEvaluateParams", SealedHubToken,
                                      adapter=(StoredAdapterRef | None, None))


def check(model: str, inputs: Any, parsed: Any, who: Submitter) -> Validated:
    """Metrics must suit the task; model, adapter and data must exist for this tenant."""
    params: EvaluateParams = parsed
    metrics = params.metrics or DEFAULT_METRICS[params.task_type]
    classifier = params.task_type == "sequence-classification"
    if any((m in CLASSIFICATION_METRICS) != classifier for m in metrics):
        raise InvalidInput(f"params.metrics: {metrics} do not suit task_type {params.task_type}",
                           field="params.metrics")
    ref = check_model_ref(model, who.settings)
    needs = [["text", "label"]] if classifier else [["text", "reference"]]
    stored = params.model_dump(exclude_none=True, exclude={"data", "adapter", "hub_token", "metrics"})
    stored.update(metrics=metrics, data=check_data(params.data, who, needs))
    adapter = check_adapter(params.adapter, who)
    if adapter is not None:
        stored["adapter"] = adapter
    return Validated(model=ref, inputs=None, params=seal_hub_token(stored, params.hub_token))


SPEC = register(JobSpec(
    kind="evaluate",
    queue="finetune",
    params_model=EvaluateParams,
    check=check,
    stored_model=StoredEvaluateParams,
    time_limit_s=3600,
    description="Evaluate a model (+adapter) on a data split with shipped metrics.",
))
