"""token-classification / ner: labelled spans (entities), grouped by the pipeline's aggregation strategies."""
from __future__ import annotations

from typing import Any

from gpuq.common.jobs.inference import TokenClassificationParams
from gpuq.worker.inference.base import LoadSpec, SimpleTask, load_pretrained, register_task


def _plain(entity: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entity.items():
        if key == "score":
            out[key] = float(value)
        elif key in ("start", "end", "index"):
            out[key] = None if value is None else int(value)
        else:
            out[key] = value
    return out


class TokenClassification(SimpleTask):
    """The transformers token-classification pipeline still exists and owns the aggregation logic (simple,
    first, average, max); it runs over the whole merged batch in ``forward``, where the tokenizer may be used.
    """

    name = "token-classification"
    loader = "token-classification"

    def load(self, spec: LoadSpec) -> Any:
        from transformers import pipeline

        loaded = load_pretrained(spec, "AutoModelForTokenClassification")
        return pipeline("token-classification", model=loaded.model, tokenizer=loaded.tokenizer,
                        device=loaded.model.device)

    def group(self, params: TokenClassificationParams) -> Any:
        return params.aggregation_strategy, tuple(params.ignore_labels)

    def forward(self, resident: Any, items: list[str], params: TokenClassificationParams,
                stream: Any) -> list[Any]:
        strategy = params.aggregation_strategy
        ignore = list(params.ignore_labels)
        outs = resident(items, aggregation_strategy=strategy, ignore_labels=ignore, batch_size=len(items))
        if items and outs and isinstance(outs[0], dict):  # a single input comes back unwrapped
            outs = [outs]
        return [[_plain(e) for e in row] for row in outs]


TASK = register_task(TokenClassification())
