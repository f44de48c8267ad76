"""The training loop: an accelerate ``Accelerator`` drives device placement, mixed precision and gradient
accumulation, so those come from configuration rather than code. Progress (step/total, loss, learning rate,
eval metrics, ETA) is reported every ``log_every`` optimizer steps; cancellation is checked after every step
and stops the loop with a checkpoint, so a cancelled job keeps what a resume needs.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from gpuq.common.errors import JobCancelled, JobInterrupted
from gpuq.worker.context import JobContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    """How long to train and how often to report, evaluate and checkpoint (in optimizer steps)."""

    total_steps: int
    epochs: int
    log_every: int = 1
    eval_every: int | None = None
    checkpoint_every: int | None = None
    max_grad_norm: float | None = 1.0


@dataclass
class LoopState:
    """Where training is; saved in every checkpoint and restored on resume."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0  # batches consumed in the current epoch
    resumed_from: int = 0
    checkpointed: int = 0
    loss: float | None = None
    evals: dict[str, float] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON form for a checkpoint's state.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        """Rebuild from a checkpoint's state (unknown keys, like the step of the folder, are ignored)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Hooks:
    """What the loop calls back into: the data of an epoch, evaluation, and checkpointing."""

    loader: Callable[[int], Any]
    evaluate: Callable[[], dict[str, float]] | None
    checkpoint: Callable[[LoopState], None]


def new_accelerator(mixed_precision: str, accumulation: int, cpu: bool) -> Any:
    """A fresh Accelerator for this job.

    accelerate keeps process-wide singletons; a worker runs many jobs with different precision and
    accumulation settings in one process, so the per-run state is reset first (the device state is kept).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=accumulation, cpu=cpu)


def _train_batch(acc: Any, model: Any, optimizer: Any, scheduler: Any, batch: dict[str, Any],
                 cfg: LoopConfig) -> float:
    with acc.accumulate(model):
        loss = model(**batch).loss
        acc.backward(loss)
        if acc.sync_gradients and cfg.max_grad_norm:
            acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return float(loss.detach().float().item())


def _report(ctx: JobContext, state: LoopState, cfg: LoopConfig, lr: float, began: float, evals: bool) -> None:
    done_here = state.step - state.resumed_from
    elapsed = time.perf_counter() - began
    eta = elapsed / done_here * (cfg.total_steps - state.step) if done_here else None
    entry: dict[str, Any] = {"step": state.step, "epoch": state.epoch, "loss": state.loss, "lr": lr,
                             "elapsed_s": round(elapsed, 3)}
    if evals:
        entry.update(state.evals)
    state.log.append(entry)
    ctx.progress(state.step, cfg.total_steps, unit="steps", loss=state.loss, lr=lr, epoch=state.epoch,
                 eta_s=None if eta is None else round(eta, 1), **({"eval": state.evals} if evals else {}))


def _after_step(ctx: JobContext, state: LoopState, cfg: LoopConfig, hooks: Hooks, lr: float, began: float) -> None:
    last = state.step >= cfg.total_steps
    evals = bool(hooks.evaluate) and (last or bool(cfg.eval_every and state.step % cfg.eval_every == 0))
    if evals and hooks.evaluate is not None:
        state.evals = hooks.evaluate()
    if evals or last or state.step % cfg.log_every == 0:
        _report(ctx, state, cfg, lr, began, evals)
    else:
        ctx.check_cancelled()
    if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and not last:
        hooks.checkpoint(state)
        state.checkpointed = state.step


def run(ctx: JobContext, acc: Any, model: Any, optimizer: Any, scheduler: Any, cfg: LoopConfig,
        state: LoopState, hooks: Hooks) -> LoopState:
    """Train until ``cfg.total_steps`` optimizer steps; on cancellation checkpoint, then re-raise."""
    began = time.perf_counter()
    model.train()
    losses: list[float] = []
    try:
        while state.step < cfg.total_steps and state.epoch < cfg.epochs:
            loader = hooks.loader(state.epoch)
            if state.batches_done:
                loader = acc.skip_first_batches(loader, state.batches_done)
            for batch in loader:
                losses.append(_train_batch(acc, model, optimizer, scheduler, batch, cfg))
                state.batches_done += 1
                if not acc.sync_gradients:
                    continue
                state.step += 1
                state.loss = round(sum(losses) / len(losses), 6)
                losses.clear()
                _after_step(ctx, state, cfg, hooks, float(scheduler.get_last_lr()[0]), began)
                if state.step >= cfg.total_steps:
                    break
            else:
                state.epoch += 1
                state.batches_done = 0
    except (JobCancelled, JobInterrupted) as stop:
        if state.step > state.checkpointed:
            hooks.checkpoint(state)
            why = "cancelled" if isinstance(stop, JobCancelled) else "worker shutting down"
            ctx.log(f"{why} at step {state.step}; checkpoint saved", step=state.step)
        raise
    return state


def steps_for(batches_per_epoch: int, accumulation: int, epochs: int, max_steps: int | None) -> tuple[int, int]:
    """(total optimizer steps, epochs needed): ``max_steps`` wins over ``epochs`` when given."""
    per_epoch = max(1, math.ceil(batches_per_epoch / accumulation))
    if max_steps:
        return max_steps, math.ceil(max_steps / per_epoch)
    return per_epoch * epochs, epochs
