"""Handler for the ``evaluate`` kind: predictions of a resident model (+ adapter) over a split, then metrics."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gpuq.common.errors import JobError
from gpuq.common.jobs.evaluate import EvaluateParams, StoredEvaluateParams
from gpuq.worker import adapters
from gpuq.worker.context import JobContext
from gpuq.worker.device import device, torch_dtype
from gpuq.worker.models import ModelKey
from gpuq.worker.training import data
from gpuq.worker.training.model import load_model, load_tokenizer, resolve_base


def _resident(ctx: JobContext, p: EvaluateParams) -> tuple[Any, Any]:
    """(model, tokenizer) from the resident cache: a second evaluation of the same model loads nothing."""
    dtype = torch_dtype(p.dtype)
    base = resolve_base(ctx)
    key = ModelKey(ctx.model, ctx.resolved.get("model", {}).get("sha") or p.revision, f"evaluate:{p.task_type}",
                   str(dtype), device())

    def load() -> tuple[Any, Any]:
        model = load_model(p.task_type, base, dtype).to(device()).eval()
        return model, load_tokenizer(base)
    return ctx.resident(key, load)  # type: ignore[no-any-return]


def _batched(ctx: JobContext, rows: list[str], size: int, fn: Callable[[list[str]], list[Any]]) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(rows), size):
        out += fn(rows[start:start + size])
        ctx.progress(len(out), len(rows), unit="rows")
    return out


def _classify(model: Any, tok: Any, p: EvaluateParams) -> Callable[[list[str]], list[Any]]:
    import torch

    def batch(texts: list[str]) -> list[int]:
        enc = tok(texts, padding=True, truncation=True, max_length=p.max_length, return_tensors="pt").to(device())
        with torch.inference_mode():
            return model(**enc).logits.argmax(-1).tolist()  # type: ignore[no-any-return]
    return batch


def _generate(model: Any, tok: Any, p: EvaluateParams) -> Callable[[list[str]], list[Any]]:
    import torch

    seq2seq = p.task_type == "seq2seq"

    def batch(texts: list[str]) -> list[str]:
        tok.padding_side = "right" if seq2seq else "left"  # decoder-only models continue from the right edge
        enc = tok(texts, padding=True, truncation=True, max_length=p.max_length, return_tensors="pt").to(device())
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=p.max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        new = out if seq2seq else out[:, enc["input_ids"].shape[1]:]
        return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    return batch


def _references(model: Any, values: list[Any], classifier: bool) -> list[Any]:
    """Class ids for a classifier (label names mapped through the model's config), strings otherwise."""
    if not classifier:
        return [str(v) for v in values]
    label2id = {str(k): int(v) for k, v in (model.config.label2id or {}).items()}
    try:
        return [v if isinstance(v, int) else label2id[str(v)] for v in values]
    except KeyError as exc:
        raise JobError(f"label {exc.args[0]!r} is not one of the model's labels {sorted(label2id)}") from None


def run(ctx: JobContext) -> Any:
    """Predict over the split, compute the metrics, keep predictions and metrics as artifacts."""
    from gpuq.worker.metrics import compute_metrics

    p = ctx.params_as(StoredEvaluateParams)
    classifier = p.task_type == "sequence-classification"
    d = p.data.model_copy(update={"shuffle": False})
    needs = [["text", "label"]] if classifier else [["text", "reference"]]
    rows = data.prepare(data.load_rows(ctx, d), d, needs, split_eval=False).train
    model, tok = _resident(ctx, p)
    texts = [str(t) for t in rows["text"]]
    with adapters.applied(ctx, model):
        fn = _classify(model, tok, p) if classifier else _generate(model, tok, p)
        predictions = _batched(ctx, texts, p.batch_size, fn)
    references = _references(model, list(rows[needs[0][1]]), classifier)
    scores = compute_metrics(p.metrics, predictions, references)
    lines = [json.dumps({"text": t, "reference": r, "prediction": y}) + "\n"
             for t, r, y in zip(texts, references, predictions)]
    ctx.put_artifact("predictions.jsonl", "".join(lines).encode())
    ctx.put_artifact("metrics.json", json.dumps(scores, indent=2).encode())
    return {"task_type": p.task_type, "rows": len(texts), "metrics": scores, "artifact": "predictions.jsonl",
            "adapter": p.adapter and p.adapter.model_dump(exclude_none=True, exclude={"sealed_token"}),
            "resolved": ctx.resolved}
