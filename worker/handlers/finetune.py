"""Handler for the ``finetune`` kind: LoRA SFT or DPO, resuming from the newest checkpoint on redelivery."""
from __future__ import annotations

import logging
from typing import Any

from gpuq.common.jobs.finetune import FinetuneParams
from gpuq.worker.context import JobContext
from gpuq.worker.training import checkpoint, outputs
from gpuq.worker.training.model import resolve_base

log = logging.getLogger(__name__)
_STORED_ONLY = ("sealed_hub_token", "push_to_hub")  # sealed forms the submit-side model does not accept


def parse(params: dict[str, Any]) -> FinetuneParams:
    """The typed params (the push target and sealed token stay in the raw dict, read where they are used)."""
    return FinetuneParams.model_validate({k: v for k, v in params.items() if k not in _STORED_ONLY})


def run(ctx: JobContext) -> Any:
    """Train (or resume training), then store the outputs and push them when asked."""
    p = parse(ctx.params)
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
