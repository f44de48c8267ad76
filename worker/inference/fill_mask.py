"""fill-mask: the most likely tokens for each mask token in the text."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuq.common.jobs.inference import FillMaskParams
from gpuq.worker.inference.base import SimpleTask, TextModel, bad_input, no_grad, register_task


@dataclass(frozen=True)
class Item:
    text: str
    top_k: int
    targets: tuple[str, ...] | None


class FillMask(SimpleTask):
    """Post-processing decodes with the tokenizer, so it runs in ``forward`` too: a fast tokenizer must not be
    used from two threads at once, and ``forward`` is the only place that runs on the batcher's thread."""

    name = "fill-mask"
    loader = "masked-lm"
    auto_class = "AutoModelForMaskedLM"

    def prepare(self, resident: TextModel, inputs: list[Any], params: FillMaskParams) -> list[Any]:
        mask = resident.tokenizer.mask_token
        for i, text in enumerate(inputs):
            if mask is None or mask not in text:
                raise bad_input(i, f"no mask token {mask!r} in the text")
        targets = tuple(params.targets) if params.targets else None
        return [Item(text, params.top_k, targets) for text in inputs]

    def forward(self, resident: TextModel, items: list[Item], params: FillMaskParams,
                stream: Any) -> list[Any]:
        tok = resident.tokenizer
        enc = tok([item.text for item in items], padding=True, truncation=True, return_tensors="pt")
        with no_grad():
            logits = resident.model(**enc.to(resident.device)).logits.float().cpu()
        ids = enc["input_ids"].cpu()
        out = []
        for row, item in enumerate(items):
            positions = (ids[row] == tok.mask_token_id).nonzero().flatten().tolist()
            targets = self._target_ids(tok, item.targets)
            per_mask = [self._fill(tok, ids[row], p, logits[row, p], item.top_k, targets) for p in positions]
            out.append(per_mask[0] if len(per_mask) == 1 else per_mask)
        return out

    @staticmethod
    def _fill(tok: Any, ids: Any, position: int, logits: Any, top_k: int,
              targets: list[int] | None) -> list[Any]:
        import torch

        probs = torch.softmax(logits, dim=-1)
        if targets is not None:
            order = probs[targets].argsort(descending=True)[:top_k]
            indices = torch.tensor(targets)[order]
            values = probs[indices]
        else:
            values, indices = probs.topk(min(top_k, probs.shape[-1]))
        rows = []
        for score, token in zip(values.tolist(), indices.tolist()):
            filled = ids.clone()
            filled[position] = token
            rows.append({"score": float(score), "token": int(token), "token_str": tok.decode([token]).strip(),
                         "sequence": tok.decode(filled, skip_special_tokens=True)})
        return rows

    @staticmethod
    def _target_ids(tok: Any, targets: tuple[str, ...] | None) -> list[int] | None:
        if not targets:
            return None
        ids = {pieces[0] for t in targets if (pieces := tok(t, add_special_tokens=False)["input_ids"])}
        return sorted(ids) or None


TASK = register_task(FillMask())
