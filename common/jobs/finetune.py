"""The ``finetune`` job kind: PEFT LoRA on a causal LM or a sequence classifier, SFT or DPO, through accelerate.

Checkpoints go to the artifact store every ``training.checkpoint_every`` steps; a redelivered job (its worker
died) resumes from the newest one. Outputs: the adapter, optionally the merged model, the tokenizer, metrics,
a training log and a model card; optionally pushed to the Hub.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.datasource import (DataSource, MetricName, Revision, SealedHubToken, check_data,
                                         seal_hub_token)
from gpuq.common.jobs.hubpush import PushToHub, StoredPushToHub, prepare_push
from gpuq.common.jobs.modelref import check_model_ref
from gpuq.common.jobs.registry import JobSpec, Submitter, Validated, register, stored_variant

# Must stay at least VISIBILITY_MARGIN_S below GPUQ_VISIBILITY_TIMEOUT_S (default 7200): the worker refuses to
# start otherwise, because a longer job would be redelivered to a second worker while still running.
TIME_LIMIT_S = 7000
TaskType = Literal["causal-lm", "sequence-classification"]
ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]{1,128}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LoraSpec(_Strict):
    """PEFT ``LoraConfig`` fields."""

    r: int = Field(8, ge=1, le=1024)
    lora_alpha: int = Field(16, ge=1, le=8192)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    # None: PEFT's default for the architecture, else "all-linear".
    target_modules: list[ModuleName] | Literal["all-linear"] | None = None
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: list[ModuleName] | None = Field(None, max_length=64)


class TrainingSpec(_Strict):
    """Optimisation, schedule, precision, and how often to report, evaluate and checkpoint (in optimizer steps)."""

    epochs: int = Field(1, ge=1, le=1000)
    max_steps: int | None = Field(None, ge=1, le=10_000_000)
    learning_rate: float = Field(2e-4, gt=0, le=1)
    batch_size: int = Field(8, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    max_length: int = Field(512, ge=8, le=131_072)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0, le=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    log_every: int = Field(1, ge=1)
    eval_every: int | None = Field(None, ge=1)
    checkpoint_every: int | None = Field(50, ge=1)
    eval_batch_size: int = Field(32, ge=1, le=4096)
    max_eval_rows: int = Field(1000, ge=1, le=1_000_000)


class DpoSpec(_Strict):
    """trl ``DPOConfig`` fields beyond the shared training ones."""

    beta: float = Field(0.1, gt=0, le=100)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"


class FinetuneParams(_Strict):
    """Params of a fine-tune job."""

    method: Literal["lora"] = "lora"
    task_type: TaskType = "causal-lm"
    trainer: Literal["sft", "dpo"] = "sft"
    revision: Revision | None = None
    data: DataSource
    lora: LoraSpec = Field(default_factory=lambda: LoraSpec.model_validate({}))
    training: TrainingSpec = Field(default_factory=lambda: TrainingSpec.model_validate({}))
    dpo: DpoSpec = Field(default_factory=lambda: DpoSpec.model_validate({}))
    labels: list[str] | None = Field(None, min_length=2, max_length=10_000)
    metrics: list[MetricName] = Field(default_factory=list)
    merge: bool = False
    push_to_hub: PushToHub | None = None
    hub_token: SecretStr | None = None

    @model_validator(mode="after")
    def _dpo_is_causal(self) -> FinetuneParams:
        if self.trainer == "dpo" and self.task_type != "causal-lm":
            raise ValueError("trainer 'dpo' trains a causal LM: set task_type 'causal-lm'")
        return self


# The record's form: push target and Hub token sealed (``hub_token`` is never stored).
StoredFinetuneParams = stored_variant(FinetuneParams, "StoredFinetuneParams", SealedHubToken,
                                      push_to_hub=(StoredPushToHub | None, None))


def needed_columns(params: FinetuneParams) -> list[list[str]]:
    """The canonical columns this job reads, as alternatives: the first one the data has is used. OpenAI's
    fine-tuning formats (``messages``; ``input`` + ``preferred_output`` + ``non_preferred_output``) are turned
    into the first alternative by the worker, through the base model's chat template."""
    if params.trainer == "dpo":
        return [["prompt", "chosen", "rejected"], ["input", "preferred_output", "non_preferred_output"]]
    if params.task_type == "sequence-classification":
        return [["text", "label"]]
    return [["prompt", "completion"], ["text"], ["messages"]]


def check(model: str, inputs: Any, parsed: Any, who: Submitter) -> Validated:
    """Validate the base model, the data and the push target; seal every token."""
    params: FinetuneParams = parsed
    if params.task_type == "sequence-classification" and any(m in ("bleu", "sacrebleu", "rouge")
                                                             for m in params.metrics):
        raise InvalidInput("params.metrics: text metrics need generated text; use accuracy/f1/precision/recall",
                           field="params.metrics")
    ref = check_model_ref(model, who.settings)
    # None is kept: it can mean "off" where the default is on (checkpoint_every, max_grad_norm).
    stored = params.model_dump(exclude={"data", "push_to_hub", "hub_token"})
    stored["data"] = check_data(params.data, who, needed_columns(params))
    push = prepare_push(params.push_to_hub, who)
    if push is not None:
        stored["push_to_hub"] = push
    return Validated(model=ref, inputs=None, params=seal_hub_token(stored, params.hub_token))


SPEC = register(JobSpec(
    kind="finetune",
    queue="finetune",
    params_model=FinetuneParams,
    check=check,
    stored_model=StoredFinetuneParams,
    time_limit_s=TIME_LIMIT_S,
    max_attempts=4,
    description="LoRA fine-tune (SFT or DPO) with checkpoints, resume, model card and optional Hub push.",
))
