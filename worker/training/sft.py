"""Supervised LoRA fine-tuning (causal LM or sequence classifier) on the accelerate loop, with resume."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gpuq.common.jobs.finetune import FinetuneParams, TrainingSpec, needed_columns
from gpuq.worker.context import JobContext
from gpuq.worker.device import device
from gpuq.worker.training import checkpoint, data, loop
from gpuq.worker.training import model as models
from gpuq.worker.training.outputs import Trained

MIXED = {"bf16": "bf16", "fp16": "fp16", "no": "no"}


def mixed_precision(requested: str) -> str:
    """``auto``: bf16 where the GPU supports it, fp16 on other GPUs, none on CPU."""
    import torch

    if requested != "auto":
        return MIXED[requested]
    if not device().startswith("cuda"):
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _eval_fn(acc: Any, model: Any, loader: Any, task: str, metrics: list[str]) -> Any:
    import torch

    from gpuq.worker.metrics import compute_metrics

    def evaluate() -> dict[str, float]:
        model.eval()
        preds: list[int] = []
        refs: list[int] = []
        total, count = 0.0, 0
        with torch.no_grad(), acc.autocast():
            for batch in loader:
                batch = {k: v.to(acc.device) for k, v in batch.items()}
                out = model(**batch)
                rows = batch["input_ids"].shape[0]
                total, count = total + float(out.loss) * rows, count + rows
                if task == "sequence-classification":
                    preds += out.logits.argmax(-1).tolist()
                    refs += batch["labels"].tolist()
        model.train()
        scores = {"eval_loss": round(total / max(count, 1), 6)}
        if task == "causal-lm":
            scores["eval_perplexity"] = round(math.exp(min(scores["eval_loss"], 50.0)), 4)
        else:
            scores.update({f"eval_{k}": round(v, 6) for k, v in compute_metrics(metrics, preds, refs).items()})
        return scores
    return evaluate


def _loaders(splits: data.Splits, spec: TrainingSpec, pad_id: int, acc: Any) -> tuple[Any, Any]:
    """A per-epoch train loader factory (seeded order, so a resume sees the same batches) and an eval loader."""
    import torch
    from torch.utils.data import DataLoader

    collate = data.collate(pad_id)

    def for_epoch(epoch: int) -> Any:
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(spec.seed + epoch))
        return acc.prepare(DataLoader(splits.train, batch_size=spec.batch_size, sampler=order.tolist(),
                                      collate_fn=collate))
    evals = None
    if splits.eval is not None and len(splits.eval):
        rows = splits.eval.select(range(min(len(splits.eval), spec.max_eval_rows)))
        evals = DataLoader(rows, batch_size=spec.eval_batch_size, collate_fn=collate)
    return for_epoch, evals


def _tokenized(ctx: JobContext, p: FinetuneParams, tokenizer: Any, base_labels: dict[int, str]) -> tuple[
        data.Splits, list[str] | None]:
    rows = data.from_conversations(data.load_rows(ctx, p.data), tokenizer)
    splits = data.prepare(rows, p.data, needed_columns(p))
    length = p.training.max_length
    if p.task_type == "sequence-classification":
        labels = data.label_names(splits, p.labels, base_labels)
        enc = [None if s is None else data.tokenize_classification(s, tokenizer, labels, length)
               for s in (splits.train, splits.eval)]
        return data.Splits(enc[0], enc[1]), labels
    enc = [None if s is None else data.tokenize_causal(s, tokenizer, length) for s in (splits.train, splits.eval)]
    return data.Splits(enc[0], enc[1]), None


def _state(ckpt: checkpoint.Checkpoint | None) -> loop.LoopState:
    if ckpt is None:
        return loop.LoopState()
    state = loop.LoopState.from_dict(ckpt.state)
    state.resumed_from = state.checkpointed = ckpt.step
    return state


def train(ctx: JobContext, base: Path, p: FinetuneParams, ckpt: checkpoint.Checkpoint | None) -> Trained:
    """Build model, data and optimiser, restore the checkpoint if any, and run the loop to the end."""
    import torch
    from transformers import AutoConfig, get_scheduler

    spec = p.training
    torch.manual_seed(spec.seed)
    tokenizer = models.load_tokenizer(base)
    base_config = AutoConfig.from_pretrained(str(base))
    splits, labels = _tokenized(ctx, p, tokenizer, dict(getattr(base_config, "id2label", None) or {}))
    precision = mixed_precision(spec.mixed_precision)
    acc = loop.new_accelerator(precision, spec.gradient_accumulation_steps, cpu=not device().startswith("cuda"))
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = models.with_lora(models.load_model(p.task_type, base, dtype, labels), p.task_type, p.lora,
                             spec.gradient_checkpointing)
    if p.task_type == "sequence-classification":
        model.config.pad_token_id = tokenizer.pad_token_id
    for_epoch, eval_loader = _loaders(splits, spec, tokenizer.pad_token_id, acc)
    batches = math.ceil(len(splits.train) / spec.batch_size)
    total, epochs = loop.steps_for(batches, spec.gradient_accumulation_steps, spec.epochs, spec.max_steps)
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=spec.learning_rate,
                                  weight_decay=spec.weight_decay)
    scheduler = get_scheduler(spec.lr_scheduler, optimizer, num_warmup_steps=spec.warmup_steps,
                              num_training_steps=total)
    state = _state(ckpt)
    if ckpt is not None:
        checkpoint.restore_sft(ckpt, model, optimizer, scheduler)
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    metrics = p.metrics or (["accuracy", "f1"] if p.task_type == "sequence-classification" else [])
    evaluate = _eval_fn(acc, model, eval_loader, p.task_type, metrics) if eval_loader is not None else None

    def save(st: loop.LoopState) -> None:
        with checkpoint.scratch() as tmp:
            checkpoint.capture_sft(acc.unwrap_model(model), optimizer, scheduler, Path(tmp))
            checkpoint.save(ctx, st.step, Path(tmp), st.as_dict())

    if ckpt is None and evaluate is not None:
        state.evals = evaluate()
        state.log.append({"step": 0, **state.evals})
        ctx.progress(0, total, unit="steps", eval=state.evals)
    cfg = loop.LoopConfig(total, epochs, spec.log_every, spec.eval_every, spec.checkpoint_every, spec.max_grad_norm)
    state = loop.run(ctx, acc, model, optimizer, scheduler, cfg, state, loop.Hooks(for_epoch, evaluate, save))
    return Trained(model=acc.unwrap_model(model), tokenizer=tokenizer, log=state.log, final=state.evals,
                   train_loss=state.loss, steps=state.step, resumed_from=state.resumed_from, labels=labels,
                   rows={"train": len(splits.train), "eval": 0 if splits.eval is None else len(splits.eval)},
                   params=models.trainable_summary(model), precision=precision)

