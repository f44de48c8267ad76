"""zero-shot-classification: a NLI model scores "premise => hypothesis(label)" for every candidate label.

Each (text, label) pair is an independent row, so jobs with different label sets still share a forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuq.common.errors import ModelLoadError
from gpuq.common.jobs.inference import ZeroShotParams
from gpuq.worker.inference.base import SimpleTask, TextModel, no_grad, register_task


@dataclass(frozen=True)
class Item:
    text: str
    hypotheses: tuple[str, ...]


def nli_ids(model: Any) -> tuple[int, int]:
    """(entailment id, contradiction id) from the model's labels, as the pipeline finds them."""
    label2id = {str(k).lower(): int(v) for k, v in (model.config.label2id or {}).items()}
    entail = next((v for k, v in label2id.items() if k.startswith("entail")), None)
    contra = next((v for k, v in label2id.items() if k.startswith("contra")), None)
    if entail is None:
        raise ModelLoadError("zero-shot-classification needs an NLI model whose labels include 'entailment'")
    return entail, contra if contra is not None else (0 if entail != 0 else len(label2id) - 1)


class ZeroShot(SimpleTask):
    name = "zero-shot-classification"
    loader = "sequence-classification"
    auto_class = "AutoModelForSequenceClassification"

    def prepare(self, resident: TextModel, inputs: list[Any], params: ZeroShotParams) -> list[Any]:
        nli_ids(resident.model)
        template = params.hypothesis_template
        hypotheses = tuple(template.format(label) for label in params.candidate_labels)
        return [Item(text, hypotheses) for text in inputs]

    def forward(self, resident: TextModel, items: list[Item], params: ZeroShotParams,
                stream: Any) -> list[Any]:
        premises = [item.text for item in items for _ in item.hypotheses]
        hypotheses = [h for item in items for h in item.hypotheses]
        enc = resident.tokenizer(premises, hypotheses, padding=True, truncation="only_first",
                                 return_tensors="pt").to(resident.device)
        with no_grad():
            logits = resident.model(**enc).logits.float().cpu()
        out, start = [], 0
        for item in items:
            out.append(logits[start:start + len(item.hypotheses)])
            start += len(item.hypotheses)
        return out

    def finish(self, resident: TextModel, raw: Any, params: ZeroShotParams) -> Any:
        import torch

        entail, contra = nli_ids(resident.model)
        labels = params.candidate_labels
        if params.multi_label or len(labels) == 1:
            probs = torch.softmax(raw[:, [contra, entail]], dim=-1)[:, 1]
        else:
            probs = torch.softmax(raw[:, entail], dim=0)
        ranked = sorted(zip(labels, probs.tolist()), key=lambda pair: pair[1], reverse=True)
        return {"labels": [label for label, _ in ranked], "scores": [float(score) for _, score in ranked]}


TASK = register_task(ZeroShot())
