"""text-generation: a causal LM continues each prompt; optional stop strings, token streaming, ``n`` choices.

Served by the continuous-batching engine (worker/generation/: ``split``, ``prompt_ids``, ``shape``) unless
``GPUQ_GENERATION_ENGINE=static``, the job uses beam search or an n-gram ban, or the model is one the engine
cannot run; then by one ``generate`` call per batch of jobs with identical settings (``forward``). Both give
each input ``generated_text``, ``finish_reason`` (``stop``: end of sequence or a stop string; ``length``:
``max_new_tokens``) and ``usage`` (``prompt_tokens``, ``completion_tokens``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.inference import ContinueParams
from gpuq.worker.inference.base import register_task
from gpuq.worker.inference.base import (LoadSpec, SimpleTask, Stream, TextModel, bad_input, load_pretrained,
                                        no_grad)
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

    def group(self, params: ContinueParams) -> Any:
        return generation_group(params, tuple(params.stop), params.n)

    def prepare(self, resident: TextModel, inputs: list[Any], params: ContinueParams) -> list[Any]:
        refuse_static_only(params)
        return [Item(p, params.return_full_text, params.stream) for p in inputs]

    # --- on the engine ---

    def prompt_ids(self, resident: TextModel, item: Any, params: ContinueParams, index: int) -> list[int]:
        """The prompt's token ids (the tokenizer's own special tokens included, as ``forward`` encodes it)."""
        ids = list(resident.tokenizer(item)["input_ids"])
        if not ids:
            raise bad_input(index, "the prompt encodes to no tokens")
        return ids

    def shape(self, item: Any, text: str, params: ContinueParams) -> dict[str, Any]:
        """One choice's result fields from its generated text."""
        return {"generated_text": item + text if params.return_full_text else text}

    # --- static ---

    def forward(self, resident: TextModel, items: list[Item], params: ContinueParams,
                stream: Stream | None) -> list[Any]:
        tok, stops, n = resident.tokenizer, list(params.stop), params.n
        enc = tok([i.prompt for i in items], padding=True, return_tensors="pt").to(resident.device)
        kwargs = generate_kwargs(params)
        if n > 1:
            kwargs["num_return_sequences"] = n
        if stops:
            kwargs.update(stop_strings=stops, tokenizer=tok)
        if stream is not None and any(i.stream for i in items) and n == 1:
            kwargs["streamer"] = make_streamer(tok, resident.model, [i.stream for i in items], stops, stream,
                                               skip_prompt=True)
        seed_for(params)
        with no_grad():
            out = resident.model.generate(**enc, pad_token_id=tok.pad_token_id, **kwargs)
        width = enc["input_ids"].shape[1]
        prompt_tokens = enc["attention_mask"].sum(-1).tolist()
        eos = eos_ids(resident.model)
        results = []
        for i, item in enumerate(items):
            rows = [out[i * n + j, width:].tolist() for j in range(n)]
            choices = [self._choice(tok, item, row, stops, eos, params) for row in rows]
            results.append(_combine(choices, int(prompt_tokens[i])))
        return results

    def _choice(self, tok: Any, item: Item, row: list[int], stops: list[str], eos: set[int],
                params: ContinueParams) -> dict[str, Any]:
        ended = next((k for k, t in enumerate(row) if t in eos), None)
        tokens = row if ended is None else row[:ended]
        text, stopped = cut_at_stop(tok.decode(tokens, skip_special_tokens=True), stops)
        reason = "stop" if stopped or ended is not None else "length"
        return {**self.shape(item.prompt, text, params), "finish_reason": reason, "completion_tokens": len(tokens)}


def refuse_static_only(params: ContinueParams) -> None:
    """What only the continuous engine gives fails the job on the static path rather than go missing."""
    if params.logprobs is not None:
        raise InvalidInput("params.logprobs: needs the continuous-batching engine (GPUQ_GENERATION_ENGINE="
                           "continuous, num_beams 1, a model it runs)", field="params.logprobs")


def _combine(choices: list[dict[str, Any]], prompt_tokens: int) -> dict[str, Any]:
    """An input's result from its choices (the first one's fields; all of them under ``choices`` when n > 1)."""
    completion = sum(c.pop("completion_tokens") for c in choices)
    out = {**choices[0], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion}}
    if len(choices) > 1:
        out["choices"] = [{"index": j, **c} for j, c in enumerate(choices)]
    return out


TASK = register_task(TextGeneration())
