"""text-generation: a causal LM continues each prompt; optional stop strings and token streaming.

Each input's result carries ``generated_text``, ``finish_reason`` (``stop``: end of sequence or a stop string;
``length``: ``max_new_tokens``) and ``usage`` (``prompt_tokens``, ``completion_tokens``): counts only the worker
can make, since the API never loads a tokenizer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuq.worker.inference.base import LoadSpec, SimpleTask, Stream, TextModel, load_pretrained, no_grad
from gpuq.worker.inference.generation import (
    cut_at_stop,
    eos_ids,
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
        width, eos = enc["input_ids"].shape[1], eos_ids(resident.model)
        prompt_tokens = enc["attention_mask"].sum(-1).tolist()
        results = []
        for i, item in enumerate(items):
            row = out[i, width:].tolist()
            ended = next((k for k, t in enumerate(row) if t in eos), None)
            tokens = row if ended is None else row[:ended]
            text, stopped = cut_at_stop(tok.decode(tokens, skip_special_tokens=True), stops)
            results.append({**self.shape(item, text), "finish_reason": "stop" if stopped or ended is not None
                            else "length",
                            "usage": {"prompt_tokens": int(prompt_tokens[i]), "completion_tokens": len(tokens)}})
        return results

    def shape(self, item: Item, text: str) -> dict[str, Any]:
        """One input's result fields from its generated text."""
        return {"generated_text": item.prompt + text if item.full_text else text}


TASK = TextGeneration()
