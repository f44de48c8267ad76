"""Handler for the ``finetune`` kind: LoRA SFT or DPO, resuming from the newest checkpoint on redelivery."""
from __future__ import annotations

import logging
from typing import Any

from gpuq.common.jobs.finetune import StoredFinetuneParams
from gpuq.worker.context import JobContext
from gpuq.worker.training import checkpoint, outputs
from gpuq.worker.training.model import resolve_base

log = logging.getLogger(__name__)


def run(ctx: JobContext) -> Any:
    """Train (or resume training), then store the outputs and push them when asked."""
    p = ctx.params_as(StoredFinetuneParams)
    ckpt = checkpoint.latest(ctx)
    if ckpt is not None:
        ctx.log(f"resuming from checkpoint at step {ckpt.step}", resumed_from_step=ckpt.step)
    base = resolve_base(ctx)
    if p.trainer == "dpo":
        from gpuq.worker.training import dpo as trainer
    else:
        from gpuq.worker.training import sft as trainer  # type: ignore[no-redef]
    trained = trainer.train(ctx, base, p, ckpt)
    result = outputs.publish(ctx, trained, p, ctx.model)
    checkpoint.drop_all(ctx)
    return result
