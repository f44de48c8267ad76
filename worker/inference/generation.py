"""Shared by generating tasks: ``generate`` kwargs from job params, stop strings, per-row token streaming."""
from __future__ import annotations

import uuid
from collections.abc import Hashable
from typing import Any

from gpuq.common.jobs.inference import GenerateParams
from gpuq.worker.inference.base import Stream

_ALWAYS = ("max_new_tokens", "min_new_tokens", "num_beams", "repetition_penalty", "no_repeat_ngram_size",
           "length_penalty")
_SAMPLING = ("temperature", "top_p", "top_k")


def generate_kwargs(params: GenerateParams) -> dict[str, Any]:
    """The job's generation settings as ``generate`` kwargs (sampling knobs only when sampling)."""
    kwargs = {k: getattr(params, k) for k in _ALWAYS if getattr(params, k) is not None}
    kwargs["do_sample"] = params.do_sample
    if kwargs["do_sample"]:
        kwargs.update({k: getattr(params, k) for k in _SAMPLING if getattr(params, k) is not None})
    if kwargs.get("length_penalty") is not None and kwargs.get("num_beams", 1) == 1:
        kwargs.pop("length_penalty")  # only beam search reads it; generate warns otherwise
    return kwargs


def generation_group(params: GenerateParams, *extra: Hashable) -> Hashable:
    """Jobs share a ``generate`` call only with identical settings. A seeded sampling job runs alone: its
    random draws must not depend on which other jobs happened to arrive with it."""
    if params.do_sample and params.seed is not None:
        return ("alone", uuid.uuid4().hex)
    return (tuple(sorted(generate_kwargs(params).items())), params.seed, *extra)


def seed_for(params: GenerateParams) -> None:
    """Seed torch (and friends) right before ``generate`` when the job asks for it."""
    if params.seed is not None:
        import transformers

        transformers.set_seed(params.seed)


def cut_at_stop(text: str, stops: list[str] | tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to (not including) the first stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def eos_ids(model: Any) -> set[int]:
    """Token ids that end a sequence for this model."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in eos} if isinstance(eos, (list, tuple)) else {int(eos)}


def make_streamer(tokenizer: Any, model: Any, flags: list[bool], stops: list[str], emit: Stream,
                  skip_prompt: bool) -> Any:
    """A ``generate`` streamer that emits each streaming row's new text (stop strings never leak out)."""
    from transformers.generation.streamers import BaseStreamer

    class RowStreamer(BaseStreamer):  # type: ignore[misc]
        def __init__(self) -> None:
            self.ids: list[list[int]] = [[] for _ in flags]
            self.sent = [0] * len(flags)
            self.done = [not f for f in flags]
            self.prompt_pending = skip_prompt
            self.eos = eos_ids(model)
            self.holdback = max((len(s) for s in stops), default=1) - 1

        def put(self, value: Any) -> None:
            if self.prompt_pending:  # decoder-only models hand the prompt over first
                self.prompt_pending = False
                return
            deltas: dict[int, str] = {}
            for row, token in enumerate(value.reshape(-1).tolist()):
                if self.done[row]:
                    continue
                if token in self.eos:
                    self.done[row] = True
                    text = self._delta(row, final=True)
                else:
                    self.ids[row].append(token)
                    text = self._delta(row, final=False)
                if text:
                    deltas[row] = text
            if deltas:
                emit(deltas)

        def end(self) -> None:
            deltas = {row: text for row in range(len(flags)) if not self.done[row]
                      and (text := self._delta(row, final=True))}
            self.done = [True] * len(flags)
            if deltas:
                emit(deltas)

        def _delta(self, row: int, final: bool) -> str:
            text, stopped = cut_at_stop(tokenizer.decode(self.ids[row], skip_special_tokens=True), stops)
            if stopped:
                self.done[row] = final = True
            if not final:
                text = text.rstrip("\ufffd")  # half of a multi-byte character: wait for the rest
                safe = max(len(text) - self.holdback, self.sent[row])
            else:
                safe = len(text)
            delta = text[self.sent[row]:safe]
            self.sent[row] = safe
            return delta

    return RowStreamer()
