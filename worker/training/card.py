"""The model card (README.md) of a fine-tune: base model, data, method, hyperparameters, metrics."""
from __future__ import annotations

from typing import Any

from gpuq.common.jobs.finetune import FinetuneParams
from gpuq.common.jobs.modelref import is_local

PIPELINE_TAGS = {"causal-lm": "text-generation", "sequence-classification": "text-classification"}


def _table(rows: dict[str, Any]) -> str:
    lines = ["| name | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines)


def _data_line(p: FinetuneParams, resolved: dict[str, Any], rows: dict[str, int]) -> str:
    d = p.data
    if d.dataset:
        pin = resolved.get("dataset", {})
        where = f"Hub dataset `{d.dataset}` (config `{d.config or 'default'}`, split `{d.split}`, " \
                f"commit `{pin.get('sha', '?')}`)"
    else:
        where = f"uploaded file `{d.file_id}`"
    mapped = f", columns mapped {d.columns}" if d.columns else ""
    return f"{where}{mapped}; {rows.get('train', 0)} training rows, {rows.get('eval', 0)} eval rows."


def hyperparameters(p: FinetuneParams, precision: str) -> dict[str, Any]:
    """The knobs a reader needs to reproduce the run."""
    t, lo = p.training, p.lora
    out: dict[str, Any] = {
        "method": f"LoRA ({p.trainer.upper()})", "task_type": p.task_type, "r": lo.r, "lora_alpha": lo.lora_alpha,
        "lora_dropout": lo.lora_dropout, "target_modules": lo.target_modules or "PEFT default",
        "learning_rate": t.learning_rate, "batch_size": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps, "epochs": t.epochs,
        "max_steps": t.max_steps, "lr_scheduler": t.lr_scheduler, "warmup_steps": t.warmup_steps,
        "weight_decay": t.weight_decay, "max_length": t.max_length, "seed": t.seed, "mixed_precision": precision,
    }
    if p.trainer == "dpo":
        out.update(beta=p.dpo.beta, loss_type=p.dpo.loss_type)
    return out


def render(base: str, p: FinetuneParams, resolved: dict[str, Any], metrics: dict[str, Any], rows: dict[str, int],
           precision: str, job_id: str) -> str:
    """README.md text with YAML metadata the Hub understands (base_model, library_name, tags, datasets)."""
    from huggingface_hub import ModelCard, ModelCardData

    meta = ModelCardData(library_name="peft", pipeline_tag=PIPELINE_TAGS[p.task_type],
                         tags=["gpuq", "lora", p.trainer, "peft"],
                         base_model=None if is_local(base) else base,
                         datasets=[p.data.dataset] if p.data.dataset else None)
    model_pin = resolved.get("model", {})
    base_line = f"`{base}`" + (f" at commit `{model_pin['sha']}`" if model_pin.get("sha") else "")
    scores = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    text = "\n\n".join([
        f"---\n{meta.to_yaml()}\n---",
        "# LoRA adapter trained with gpuq",
        (f"- **Base model:** {base_line}\n- **Data:** {_data_line(p, resolved, rows)}\n"
         f"- **Method:** PEFT LoRA, trainer `{p.trainer}`\n- **gpuq job:** `{job_id}`"),
        "## Hyperparameters", _table(hyperparameters(p, precision)),
        "## Metrics", _table(scores) if scores else "No evaluation split.",
        "## Use it",
        ("```python\nfrom peft import PeftModel\nfrom transformers import AutoModel\n\n"
         f"base = AutoModel.from_pretrained({base!r})\nmodel = PeftModel.from_pretrained(base, \"<this repo>\")\n```"),
    ])
    return str(ModelCard(text))
