"""Training checkpoints in the artifact store, and finding the newest one when a job is redelivered.

A checkpoint is the folder ``checkpoints/step-<N>/`` of the job's artifacts. Its ``state.json`` is written
last, so a checkpoint without one (the worker died while writing it) is ignored. Only the newest
``GPUQ_FINETUNE_CHECKPOINT_KEEP`` complete checkpoints are kept while training.
"""
from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuq.worker.context import JobContext

log = logging.getLogger(__name__)
PREFIX = "checkpoints"
_STATE = re.compile(rf"^{PREFIX}/step-(\d+)/state\.json$")


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint: its step, its folder (readable locally) and its state."""

    step: int
    path: Path
    state: dict[str, Any]


def folder_name(step: int) -> str:
    """Artifact folder of the checkpoint at ``step``."""
    return f"{PREFIX}/step-{step:08d}"


def steps(ctx: JobContext) -> list[int]:
    """Steps of the complete checkpoints this job has stored, oldest first."""
    # ctx.artifacts mirrors the store (the runner adopts an earlier attempt's artifacts on redelivery).
    found = (_STATE.match(a.name) for a in ctx.artifacts)
    return sorted(int(m.group(1)) for m in found if m)


def latest(ctx: JobContext) -> Checkpoint | None:
    """The newest complete checkpoint of this job, if any (what a redelivered job resumes from)."""
    done = steps(ctx)
    if not done:
        return None
    state_path = ctx.store.local_path(ctx.tenant, ctx.job_id, f"{folder_name(done[-1])}/state.json")
    return Checkpoint(done[-1], state_path.parent, json.loads(state_path.read_text()))


def save(ctx: JobContext, step: int, folder: Path, state: dict[str, Any]) -> None:
    """Store ``folder`` as the checkpoint at ``step`` (state last), then prune older ones."""
    name = folder_name(step)
    ctx.delete_artifacts(name)  # a partial copy left by a dead attempt
    ctx.put_artifact_dir(name, folder)
    ctx.put_artifact(f"{name}/state.json", json.dumps({**state, "step": step}).encode())
    keep = max(1, ctx.settings.finetune_checkpoint_keep)
    for old in steps(ctx)[:-keep]:
        ctx.delete_artifacts(folder_name(old))
    log.info("job %s: checkpoint at step %d", ctx.job_id, step)


def drop_all(ctx: JobContext) -> None:
    """Remove every checkpoint (the job finished; its outputs are what remains)."""
    ctx.delete_artifacts(PREFIX)


def capture_sft(model: Any, optimizer: Any, scheduler: Any, folder: Path) -> None:
    """Write what an SFT resume needs: adapter weights, optimizer, scheduler and RNG states."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(weights, str(folder / "adapter.safetensors"))
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()  # type: ignore[assignment]
    torch.save(rng, folder / "rng.pt")


def restore_sft(ckpt: Checkpoint, model: Any, optimizer: Any, scheduler: Any) -> None:
    """Load a checkpoint written by ``capture_sft`` into freshly built training objects."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(ckpt.path / "adapter.safetensors")))
    optimizer.load_state_dict(torch.load(ckpt.path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(ckpt.path / "scheduler.pt", weights_only=True))
    rng = torch.load(ckpt.path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def scratch() -> tempfile.TemporaryDirectory[str]:
    """A temporary folder to assemble a checkpoint in before it is copied to the store."""
    return tempfile.TemporaryDirectory(prefix="gpuq-ckpt-")
