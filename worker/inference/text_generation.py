"""text-generation: a causal LM continues each prompt; optional stop strings and token streaming."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuq.worker.inference.base import LoadSpec, SimpleTask, Stream, TextModel, load_pretrained, no_grad
from gpuq.worker.inference.generation import (
    cut_at_stop,
    generate_kwargs,
    generation_group,
    make_streamer,
    seed_for,
)


@dataclass(frozen=True)
class Item:
    prompt: str
    full_text: bool
    stream: bool


class TextGeneration(SimpleTask):
    name = "text-generation"
    loader = "causal-lm"

    def load(self, spec: LoadSpec) -> Any:
        loaded = load_pretrained(spec, "AutoModelForCausalLM")
        loaded.tokenizer.padding_side = "left"  # batched prompts must end where generation starts
        if loaded.tokenizer.pad_token is None:
            loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
        return loaded

    def group(self, params: dict[str, Any]) -> Any:
        return generation_group(params, tuple(params.get("stop", ())))

    def prepare(self, resident: TextModel, inputs: list[Any], params: dict[str, Any]) -> list[Any]:
        return [Item(p, bool(params.get("return_full_text")), bool(params.get("stream"))) for p in inputs]

    def forward(self, resident: TextModel, items: list[Item], params: dict[str, Any],
                stream: Stream | None) -> list[Any]:
        tok, stops = resident.tokenizer, list(params.get("stop", ()))
        enc = tok([i.prompt for i in items], padding=True, return_tensors="pt").to(resident.device)
        kwargs = generate_kwargs(params)
        if stops:
            kwargs.update(stop_strings=stops, tokenizer=tok)
        if stream is not None and any(i.stream for i in items):
            kwargs["streamer"] = make_streamer(tok, resident.model, [i.stream for i in items], stops, stream,
                                               skip_prompt=True)
        seed_for(params)
        with no_grad():
            out = resident.model.generate(**enc, pad_token_id=tok.pad_token_id, **kwargs)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        results = []
        for item, text in zip(items, texts):
            text = cut_at_stop(text, stops)[0]
            results.append({"generated_text": item.prompt + text if item.full_text else text})
        return results


TASK = TextGeneration()
