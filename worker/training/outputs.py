"""What a fine-tune leaves behind: adapter, tokenizer, optional merged model, metrics, training log, model
card, all as artifacts; optionally pushed to the Hub as one commit."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuq.common.jobs.finetune import FinetuneParams, StoredFinetuneParams
from gpuq.worker import hub
from gpuq.worker.context import JobContext
from gpuq.worker.training import card

log = logging.getLogger(__name__)


@dataclass
class Trained:
    """The outcome of a training run, whichever trainer produced it."""

    model: Any
    tokenizer: Any
    log: list[dict[str, Any]]
    final: dict[str, float]
    train_loss: float | None
    steps: int
    resumed_from: int
    labels: list[str] | None
    rows: dict[str, int]
    params: dict[str, int]
    precision: str
    extra: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """metrics.json: final eval scores, the last training loss, and the scores before training."""
        initial = next((e for e in self.log if e.get("step") == 0), {})
        return {"train_loss": self.train_loss, **self.final, **self.extra, "steps": self.steps,
                "initial": {k: v for k, v in initial.items() if k != "step"}}


def _write(out: Path, trained: Trained, p: FinetuneParams, base: str, ctx: JobContext) -> None:
    adapter = out / "adapter"
    trained.model.peft_config["default"].base_model_name_or_path = base
    trained.model.save_pretrained(str(adapter))
    trained.tokenizer.save_pretrained(str(out / "tokenizer"))
    metrics = trained.metrics()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "training_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in trained.log))
    readme = card.render(base, p, ctx.resolved, {k: v for k, v in metrics.items() if k != "initial"},
                         trained.rows, trained.precision, ctx.job_id)
    (out / "README.md").write_text(readme)
    (adapter / "README.md").write_text(readme)
    if p.merge:
        merged = trained.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        trained.tokenizer.save_pretrained(str(out / "merged"))


def _hub_folder(out: Path, dest: Path) -> Path:
    """Hub layout: adapter and tokenizer files at the root (``PeftModel.from_pretrained(base, repo)`` works),
    card, metrics and log beside them, the merged model (if any) under ``merged/``."""
    for sub in ("adapter", "tokenizer"):
        shutil.copytree(out / sub, dest, dirs_exist_ok=True)
    for name in ("README.md", "metrics.json", "training_log.jsonl"):
        shutil.copy(out / name, dest / name)
    if (out / "merged").is_dir():
        shutil.copytree(out / "merged", dest / "merged")
    return dest


def publish(ctx: JobContext, trained: Trained, p: FinetuneParams, base: str) -> dict[str, Any]:
    """Store every output as an artifact, push when asked, and return the job's result."""
    with tempfile.TemporaryDirectory(prefix="gpuq-out-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        _write(out, trained, p, base, ctx)
        for item in sorted(out.iterdir()):
            if item.is_dir():
                ctx.put_artifact_dir(item.name, item)
            else:
                ctx.put_artifact_file(item.name, item)
        result: dict[str, Any] = {
            "steps": trained.steps, "resumed_from_step": trained.resumed_from, "train_loss": trained.train_loss,
            "metrics": trained.metrics(), "rows": trained.rows, "labels": trained.labels, **trained.params,
            "adapter": "adapter/", "merged": "merged/" if p.merge else None, "mixed_precision": trained.precision,
        }
        push = ctx.params_as(StoredFinetuneParams).push_to_hub
        if push is not None:
            ctx.before_side_effect(f"pushing to the Hub: {push.repo_id}")  # never by a stale attempt
            folder = _hub_folder(out, Path(tmp) / "hub")
            result["hub"] = hub.push_folder(push, folder, f"gpuq fine-tune {ctx.job_id}").as_dict()
    result["resolved"] = ctx.resolved
    return result
