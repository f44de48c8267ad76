"""text-classification / sentiment-analysis: a sequence-classification head; scores per label."""
from __future__ import annotations

from typing import Any

from gpuq.common.jobs.inference import TextClassificationParams
from gpuq.worker.inference.base import SimpleTask, TextModel, label_of, no_grad, register_task


def scores(model: Any, logits: Any, function: str) -> Any:
    """The pipeline's rule: sigmoid for multi-label or single-logit heads, else softmax (or as asked)."""
    import torch

    if function == "default":
        multi = getattr(model.config, "problem_type", None) == "multi_label_classification"
        function = "sigmoid" if multi or logits.shape[-1] == 1 else "softmax"
    if function == "sigmoid":
        return torch.sigmoid(logits)
    if function == "softmax":
        return torch.softmax(logits, dim=-1)
    return logits


class TextClassification(SimpleTask):
    name = "text-classification"
    loader = "sequence-classification"
    auto_class = "AutoModelForSequenceClassification"

    def forward(self, resident: TextModel, items: list[str], params: TextClassificationParams,
                stream: Any) -> list[Any]:
        enc = resident.tokenizer(items, padding=True, truncation=True, return_tensors="pt")
        enc = enc.to(resident.device)
        with no_grad():
            logits = resident.model(**enc).logits.float().cpu()
        return list(logits)

    def finish(self, resident: TextModel, raw: Any, params: TextClassificationParams) -> Any:
        probs = scores(resident.model, raw, params.function_to_apply).tolist()
        ranked = sorted(range(len(probs)), key=lambda i: probs[i], reverse=True)
        top_k = params.top_k or len(ranked)
        return [{"label": label_of(resident.model, i), "score": float(probs[i])} for i in ranked[:top_k]]


TASK = register_task(TextClassification())
