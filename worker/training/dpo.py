"""DPO on prompt/chosen/rejected rows with trl's ``DPOTrainer`` and a LoRA adapter.

trl's trainer owns its loop (and builds its own Accelerator), so gpuq hooks in with a ``TrainerCallback``: it
reports progress from the trainer's logs, checks cancellation after every step (asking the trainer to save
and stop), and copies each trainer checkpoint into the artifact store. A redelivered job resumes with
``train(resume_from_checkpoint=...)`` from the newest stored checkpoint. The reference model is the base with
the adapter disabled, so no second copy of the model is loaded.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from gpuq.common.errors import JobCancelled, JobInterrupted
from gpuq.common.jobs.finetune import FinetuneParams, needed_columns
from gpuq.worker.context import JobContext
from gpuq.worker.device import device
from gpuq.worker.training import checkpoint, data
from gpuq.worker.training import model as models
from gpuq.worker.training.outputs import Trained
from gpuq.worker.training.sft import mixed_precision

_NUMERIC = (int, float)


def _bridge(ctx: JobContext, history: list[dict[str, Any]]) -> Any:
    from transformers import TrainerCallback

    class Bridge(TrainerCallback):  # type: ignore[misc]
        """Progress, cancellation and checkpoint copies between trl's loop and gpuq."""

        def __init__(self) -> None:
            self.cancelled = False
            self.interrupted = False
            self.began = time.perf_counter()
            self.first_step: int | None = None

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if self.first_step is None:
                self.first_step = state.global_step - 1
            try:
                ctx.check_cancelled()
            except JobCancelled:
                self.cancelled = control.should_save = control.should_training_stop = True

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **_: Any) -> None:
            entry = {"step": state.global_step, "epoch": round(float(state.epoch or 0), 4),
                     **{k: round(float(v), 6) for k, v in (logs or {}).items() if isinstance(v, _NUMERIC)}}
            history.append(entry)
            if "loss" not in entry:  # the end-of-training summary, not a step
                return
            done = state.global_step - (self.first_step or 0)
            eta = (time.perf_counter() - self.began) / done * (state.max_steps - state.global_step) if done else None
            try:
                ctx.progress(state.global_step, state.max_steps, unit="steps", loss=entry.get("loss"),
                             lr=entry.get("learning_rate"), eta_s=None if eta is None else round(eta, 1),
                             rewards={k: v for k, v in entry.items() if k.startswith("rewards/")})
            except JobCancelled:
                self.cancelled = control.should_save = control.should_training_stop = True
            except JobInterrupted:  # worker shutting down: save, stop, and hand the job back
                self.interrupted = control.should_save = control.should_training_stop = True

        def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            checkpoint.save(ctx, state.global_step, folder, {"trainer": "dpo", "log": history})
            if self.cancelled:
                ctx.log(f"cancelled at step {state.global_step}; checkpoint saved", step=state.global_step)
    return Bridge()


def _config(p: FinetuneParams, out: Path, precision: str, has_eval: bool) -> Any:
    from trl import DPOConfig

    t = p.training
    return DPOConfig(
        output_dir=str(out), per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, learning_rate=t.learning_rate,
        num_train_epochs=t.epochs, max_steps=t.max_steps or -1, lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm or 0.0,
        seed=t.seed, data_seed=t.seed, bf16=precision == "bf16", fp16=precision == "fp16",
        use_cpu=not device().startswith("cuda"), logging_steps=t.log_every, report_to="none", disable_tqdm=True,
        save_strategy="steps" if t.checkpoint_every else "no", save_steps=t.checkpoint_every or 500,
        save_total_limit=1, eval_strategy="no", beta=p.dpo.beta, loss_type=[p.dpo.loss_type],
        max_length=t.max_length, gradient_checkpointing=t.gradient_checkpointing, dataloader_num_workers=0,
    )


def _resume_dir(ckpt: checkpoint.Checkpoint | None, out: Path) -> str | None:
    """Copy the stored trainer checkpoint where the trainer expects it."""
    if ckpt is None:
        return None
    dest = out / f"checkpoint-{ckpt.step}"
    shutil.copytree(ckpt.path, dest, ignore=shutil.ignore_patterns("state.json"))
    return str(dest)


def train(ctx: JobContext, base: Path, p: FinetuneParams, ckpt: checkpoint.Checkpoint | None) -> Trained:
    """Run DPO to the end (or resume it), returning the trained adapter and the trainer's metrics."""
    import torch
    from transformers import PrinterCallback
    from trl import DPOTrainer

    tokenizer = models.load_tokenizer(base)
    loaded = data.from_conversations(data.load_rows(ctx, p.data), tokenizer)
    rows = data.prepare(loaded, p.data, needed_columns(p),
                        split_eval=p.data.eval_split is not None or p.data.eval_file_id is not None)
    precision = mixed_precision(p.training.mixed_precision)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = models.with_lora(models.load_model("causal-lm", base, dtype), "causal-lm", p.lora,
                             p.training.gradient_checkpointing)
    history: list[dict[str, Any]] = list((ckpt.state.get("log") if ckpt else None) or [])
    bridge = _bridge(ctx, history)
    with tempfile.TemporaryDirectory(prefix="gpuq-dpo-") as tmp:
        out = Path(tmp)
        trainer = DPOTrainer(model=model, args=_config(p, out, precision, rows.eval is not None),
                             train_dataset=rows.train, eval_dataset=rows.eval, processing_class=tokenizer,
                             callbacks=[bridge])
        trainer.remove_callback(PrinterCallback)  # progress goes to the job's events, not the worker's stdout
        trainer.train(resume_from_checkpoint=_resume_dir(ckpt, out))
        if bridge.cancelled:
            raise JobCancelled("cancelled while training")
        if bridge.interrupted:
            raise JobInterrupted("worker is shutting down; checkpoint saved")
        final = {k: round(float(v), 6) for k, v in trainer.evaluate().items()
                 if isinstance(v, _NUMERIC)} if rows.eval is not None else {}
    last = next((e for e in reversed(history) if "loss" in e), {})
    return Trained(model=trainer.model, tokenizer=tokenizer, log=history, final=final,
                   train_loss=last.get("loss"), steps=trainer.state.global_step,
                   resumed_from=ckpt.step if ckpt else 0, labels=None,
                   rows={"train": len(rows.train), "eval": 0 if rows.eval is None else len(rows.eval)},
                   params=models.trainable_summary(trainer.model), precision=precision,
                   extra={k: v for k, v in last.items() if k.startswith(("rewards/", "logps/"))})
