"""Base models for training and evaluation: resolve (local dir or Hub pull at a pinned sha), load, wrap in LoRA."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gpuq.common.jobs.datasource import SealedHubToken
from gpuq.common.jobs.evaluate import EvaluateParams
from gpuq.common.jobs.finetune import FinetuneParams, LoraSpec
from gpuq.common.refs import resolve_model
from gpuq.worker import hub
from gpuq.worker.context import JobContext

AUTO_CLASSES = {"causal-lm": "AutoModelForCausalLM", "sequence-classification": "AutoModelForSequenceClassification",
                "seq2seq": "AutoModelForSeq2SeqLM"}
PEFT_TASKS = {"causal-lm": "CAUSAL_LM", "sequence-classification": "SEQ_CLS", "seq2seq": "SEQ_2_SEQ_LM"}


def resolve_base(ctx: JobContext, model: str | None = None, revision: str | None = None) -> Path:
    """The base model's local directory: under this worker's model roots (checked again here), or pulled from
    the Hub and pinned."""
    found = resolve_model(model or ctx.model, ctx.settings)
    if found.is_local:
        return Path(found.value)
    ref = found.value
    pinned = ctx.resolved.get("model", {}).get("sha")  # a resumed job trains on exactly the same commit
    own = ctx.params.revision if isinstance(ctx.params, (FinetuneParams, EvaluateParams)) else None
    wanted = revision or own
    sealed = ctx.params_as(SealedHubToken).sealed_hub_token
    pulled = hub.pull(ref, pinned or wanted, "model", hub.pull_token(sealed),
                      weights_only=True)
    ctx.pin("model", **{**pulled.pin(), "revision": wanted or "main"})
    return pulled.path


def load_tokenizer(path: Path) -> Any:
    """The base model's tokenizer, with a pad token (GPT-2 style models have none: EOS stands in)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(task: str, path: Path, dtype: Any, labels: list[str] | None = None) -> Any:
    """Load the base for ``task``; a classifier gets a head sized for ``labels`` (re-initialised if it differs)."""
    import transformers

    cls = getattr(transformers, AUTO_CLASSES[task])
    kwargs: dict[str, Any] = {"dtype": dtype}
    if labels is not None:
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={n: i for i, n in enumerate(labels)}, ignore_mismatched_sizes=True)
    return cls.from_pretrained(str(path), **kwargs)


def target_modules(spec: LoraSpec, model_type: str) -> Any:
    """The modules LoRA wraps: as configured, else PEFT's default for the architecture, else all linear layers."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    if spec.target_modules is not None:
        return spec.target_modules
    return None if model_type in DEFAULTS else "all-linear"


def with_lora(model: Any, task: str, spec: LoraSpec, gradient_checkpointing: bool = False) -> Any:
    """Wrap ``model`` in a fresh, trainable LoRA adapter named ``default``."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(r=spec.r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                        target_modules=target_modules(spec, model.config.model_type), bias=spec.bias,
                        modules_to_save=spec.modules_to_save, task_type=getattr(TaskType, PEFT_TASKS[task]))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    return get_peft_model(model, config)


def trainable_summary(model: Any) -> dict[str, int]:
    """Trainable vs total parameter counts (reported in the result and the model card)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": int(trainable), "total_params": int(total)}
