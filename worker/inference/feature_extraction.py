"""feature-extraction: sentence embeddings, mean or CLS pooled, optionally L2-normalised.

An input is a text or (``token_ids``) a list of the model's token ids, passed to the model as given. With
``count_tokens`` each result is ``{"embedding", "tokens"}``: the tokens the model read, which only the worker
can count (the API never loads a tokenizer).
"""
from __future__ import annotations

from typing import Any

from gpuq.common.jobs.inference import FeatureExtractionParams
from gpuq.worker.inference.base import SimpleTask, TextModel, bad_input, no_grad, register_task


class FeatureExtraction(SimpleTask):
    name = "feature-extraction"
    loader = "base-model"
    auto_class = "AutoModel"

    def group(self, params: FeatureExtractionParams) -> Any:
        return params.pooling

    def prepare(self, resident: TextModel, inputs: list[Any], params: FeatureExtractionParams) -> list[Any]:
        vocab = int(getattr(resident.model.config, "vocab_size", 0) or 0)
        for i, item in enumerate(inputs):
            if isinstance(item, list) and vocab and max(item) >= vocab:
                raise bad_input(i, f"token id {max(item)} is outside the model's vocabulary of {vocab}")
        return list(inputs)

    def forward(self, resident: TextModel, items: list[Any], params: FeatureExtractionParams,
                stream: Any) -> list[Any]:
        enc = self._encode(resident, items).to(resident.device)
        with no_grad():
            hidden = resident.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"]
            if params.pooling == "cls":
                emb = hidden[:, 0]
            else:
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                emb = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return list(zip(emb.cpu(), mask.sum(1).tolist()))

    @staticmethod
    def _encode(resident: TextModel, items: list[Any]) -> Any:
        tok = resident.tokenizer
        if all(isinstance(i, str) for i in items):
            return tok(items, padding=True, truncation=True, return_tensors="pt")
        limit = min(int(getattr(tok, "model_max_length", 512) or 512), 1_000_000)
        ids = [tok(i, truncation=True)["input_ids"] if isinstance(i, str) else i[:limit] for i in items]
        return tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")

    def finish(self, resident: TextModel, raw: Any, params: FeatureExtractionParams) -> Any:
        import torch

        emb, tokens = raw
        if params.normalize:
            emb = torch.nn.functional.normalize(emb, p=2, dim=0)
        # Seven decimals halve the JSON; rounding in float64 keeps each value's shortest repr short.
        values = torch.round(emb.double(), decimals=7).tolist()
        return {"embedding": values, "tokens": int(tokens)} if params.count_tokens else values


TASK = register_task(FeatureExtraction())
