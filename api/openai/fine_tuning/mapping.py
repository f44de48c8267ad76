"""OpenAI fine-tuning requests as ``finetune`` jobs, and finetune records as ``fine_tuning.job`` objects.

The method is always LoRA (gpuq's ``finetune`` kind, its LoRA defaults). ``method.type``: ``supervised`` -> the
SFT trainer, ``dpo`` -> the DPO trainer (``reinforcement`` is refused). Hyperparameters, in
``method.<type>.hyperparameters`` or the older top-level ``hyperparameters``: ``n_epochs`` ->
``training.epochs``, ``batch_size`` -> ``training.batch_size``, ``learning_rate_multiplier`` -> a multiple of
gpuq's default ``training.learning_rate``, ``beta`` (DPO) -> ``dpo.beta``; ``"auto"`` keeps gpuq's default.
``seed`` -> ``training.seed``. Training files are OpenAI's JSONL (chat ``messages`` rows, or DPO
``input``/``preferred_output``/``non_preferred_output`` rows) or gpuq's own columns (prompt/completion, text).
"""
from __future__ import annotations

from typing import Any, Literal

from gpuq.api.openai import calls
from gpuq.api.openai.catalog import Resolved, finetune_id
from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.finetune import DpoSpec, TrainingSpec
from gpuq.common.schemas import JobRecord, JobRequest
from gpuq.common.settings import Settings
from pydantic import BaseModel, ConfigDict, Field

JOB_PREFIX = "ftjob-"
BASE_LEARNING_RATE: float = TrainingSpec.model_fields["learning_rate"].default
Auto = Literal["auto"]
_STATUS = {"queued": "queued", "running": "running", "succeeded": "succeeded", "failed": "failed",
           "cancelled": "cancelled"}
_PARAMS = {"data.file_id": "training_file", "data.eval_file_id": "validation_file", "data": "training_file",
           "training.epochs": "hyperparameters.n_epochs", "training.batch_size": "hyperparameters.batch_size",
           "training.learning_rate": "hyperparameters.learning_rate_multiplier", "dpo.beta": "hyperparameters.beta"}


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    n_epochs: int | Auto | None = None
    batch_size: int | Auto | None = None
    learning_rate_multiplier: float | Auto | None = None
    beta: float | Auto | None = None


class _Hyper(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: _Hyper | None = None
    dpo: _Hyper | None = None
    reinforcement: dict[str, Any] | None = None


class FineTuneRequest(BaseModel):
    """``POST /v1/fine_tuning/jobs``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=1024)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(None, max_length=64)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = Field(None, max_length=0)

    @property
    def trainer(self) -> str:
        """gpuq's trainer for the method."""
        kind = self.method.type if self.method else "supervised"
        if kind == "reinforcement":
            raise InvalidInput("method.type: reinforcement fine-tuning is not served by gpuq (supervised, dpo)",
                               field="method.type")
        return "dpo" if kind == "dpo" else "sft"

    @property
    def hyper(self) -> Hyperparameters:
        """The hyperparameters, wherever the request put them."""
        chosen = getattr(self.method, self.method.type, None) if self.method else None
        return (chosen.hyperparameters if chosen else None) or self.hyperparameters or Hyperparameters()


def finetune_job(req: FineTuneRequest, model: Resolved) -> JobRequest:
    """The finetune job for a fine-tuning request."""
    if model.adapter is not None:
        raise InvalidInput("model: fine-tune a base model, not another fine-tune", field="model")
    hyper = req.hyper
    training: dict[str, Any] = {}
    if isinstance(hyper.n_epochs, int):
        training["epochs"] = hyper.n_epochs
    if isinstance(hyper.batch_size, int):
        training["batch_size"] = hyper.batch_size
    if isinstance(hyper.learning_rate_multiplier, float | int):
        training["learning_rate"] = BASE_LEARNING_RATE * float(hyper.learning_rate_multiplier)
    if req.seed is not None:
        training["seed"] = req.seed
    data = {"file_id": req.training_file, **({"eval_file_id": req.validation_file} if req.validation_file else {})}
    params: dict[str, Any] = {"method": "lora", "trainer": req.trainer, "data": data, "training": training}
    if req.trainer == "dpo" and isinstance(hyper.beta, float | int):
        params["dpo"] = {"beta": float(hyper.beta)}
    return calls.job_request("finetune", model.model, params, finetune_param)


def finetune_param(field: str) -> str:
    """The fine-tuning parameter a gpuq field stands for."""
    name = field.removeprefix("params.")
    best = max((k for k in _PARAMS if name == k or name.startswith(k + ".")), key=len, default=None)
    return _PARAMS[best] if best else name


def job_object(record: JobRecord, side: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The ``fine_tuning.job`` object of a finetune job (``side``: what the request said beyond the params)."""
    params, timings = record.params, record.timings
    training = {**TrainingSpec.model_validate({}).model_dump(), **params.get("training", {})}
    hyper: dict[str, Any] = {"n_epochs": training["epochs"], "batch_size": training["batch_size"],
                             "learning_rate_multiplier": training["learning_rate"] / BASE_LEARNING_RATE}
    method = "dpo" if params.get("trainer") == "dpo" else "supervised"
    if method == "dpo":
        hyper["beta"] = {**DpoSpec.model_validate({}).model_dump(), **params.get("dpo", {})}["beta"]
    error = record.error
    done = record.status == "succeeded"
    return {
        "id": JOB_PREFIX + record.id, "object": "fine_tuning.job", "created_at": int(timings.submitted_at or 0),
        "error": {"code": error.type, "message": error.message, "param": error.field} if error else None,
        "fine_tuned_model": finetune_id(record.model, record.tenant, record.id, settings)
        if done else None,
        "finished_at": int(timings.finished_at) if timings.finished_at else None,
        "hyperparameters": {k: v for k, v in hyper.items() if k != "beta"},
        "model": side.get("model") or record.model, "organization_id": record.tenant, "result_files": [],
        "seed": training["seed"], "status": _STATUS[record.status], "trained_tokens": None,
        "training_file": params.get("data", {}).get("file_id"),
        "validation_file": params.get("data", {}).get("eval_file_id"), "estimated_finish": None,
        "integrations": None, "metadata": side.get("metadata"), "user_provided_suffix": side.get("suffix") or None,
        "method": {"type": method, method: {"hyperparameters": hyper}},
    }


def job_id_of(fine_tuning_job_id: str) -> str:
    """The gpuq job id of a ``ftjob-`` id (a bare job id is accepted too)."""
    return fine_tuning_job_id.removeprefix(JOB_PREFIX)
