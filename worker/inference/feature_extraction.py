"""feature-extraction: sentence embeddings, mean or CLS pooled, optionally L2-normalised."""
from __future__ import annotations

from typing import Any

from gpuq.worker.inference.base import SimpleTask, TextModel, no_grad


class FeatureExtraction(SimpleTask):
    name = "feature-extraction"
    loader = "base-model"
    auto_class = "AutoModel"

    def group(self, params: dict[str, Any]) -> Any:
        return params.get("pooling", "mean")

    def forward(self, resident: TextModel, items: list[str], params: dict[str, Any],
                stream: Any) -> list[Any]:

        enc = resident.tokenizer(items, padding=True, truncation=True, return_tensors="pt")
        enc = enc.to(resident.device)
        with no_grad():
            hidden = resident.model(**enc).last_hidden_state.float()
            if params.get("pooling", "mean") == "cls":
                emb = hidden[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return list(emb.cpu())

    def finish(self, resident: TextModel, raw: Any, params: dict[str, Any]) -> Any:
        import torch

        if params.get("normalize"):
            raw = torch.nn.functional.normalize(raw, p=2, dim=0)
        # Seven decimals halve the JSON; rounding in float64 keeps each value's shortest repr short.
        return torch.round(raw.double(), decimals=7).tolist()


TASK = FeatureExtraction()
