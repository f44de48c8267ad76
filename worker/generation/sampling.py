"""Choosing each sequence's next token from one decode step's logits, with its own settings and generator.

The order of ``generate``'s processors: repetition penalty, the min-new-tokens EOS ban, then temperature,
top-k, top-p and a draw. Greedy rows take the arg-max of the whole batch in one call; sampled rows share one
top-k call (at the largest k among them) and then draw from their own ``torch.Generator``, so a seeded
sequence draws the same tokens whatever else shares its steps. Sampling without a ``top_k`` keeps the 50
most likely tokens, as ``generate`` does by default (``GenerationConfig.top_k``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from gpuq.common.jobs.inference import ContinueParams

DEFAULT_TOP_K = 50


@dataclass(frozen=True)
class Sampling:
    """One sequence's decoding settings."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = DEFAULT_TOP_K
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0
    logprobs: int | None = None  # alternatives per token to report (0: the chosen token's only)

    @classmethod
    def from_params(cls, params: ContinueParams) -> Sampling:
        """The settings a job's params ask for."""
        # None in the params: the model's neutral value (no temperature, top-k, top-p or penalty applied).
        return cls(do_sample=params.do_sample, temperature=params.temperature or 1.0,
                   top_k=params.top_k or DEFAULT_TOP_K, top_p=params.top_p or 1.0,
                   repetition_penalty=params.repetition_penalty or 1.0,
                   min_new_tokens=params.min_new_tokens or 0, logprobs=params.logprobs)


def generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A sequence's own generator: seeded as asked, else from the OS."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(os.urandom(8), "little") >> 1 if seed is None else seed)
    return gen


class Row(Protocol):
    """What sampling reads of a running sequence."""

    sampling: Sampling
    rng: torch.Generator | None
    tokens: list[int]
    prompt: list[int]


@dataclass
class Choice:
    """The next token of every row, and the log-probabilities the rows that asked for them get."""

    tokens: torch.Tensor
    logprobs: dict[int, tuple[float, list[tuple[int, float]]]]


def choose(logits: torch.Tensor, rows: list[Any], eos: list[int]) -> Choice:
    """Next tokens for ``rows`` from their ``[rows, vocab]`` logits."""
    logits = logits.float()
    raw = logits
    wants = [i for i, r in enumerate(rows) if r.sampling.logprobs is not None]
    edits = [i for i, r in enumerate(rows) if r.sampling.repetition_penalty != 1.0
             or len(r.tokens) < r.sampling.min_new_tokens]
    if edits:
        logits = logits.clone() if wants else logits
        _penalise(logits, [(i, rows[i]) for i in edits], eos)
    tokens = logits.argmax(-1)
    sampled = [i for i, r in enumerate(rows) if r.sampling.do_sample]
    if sampled:
        _draw(logits, tokens, sampled, rows)
    return Choice(tokens, _logprobs(raw, tokens, wants, rows) if wants else {})


def _penalise(logits: torch.Tensor, rows: list[tuple[int, Any]], eos: list[int]) -> None:
    for i, row in rows:
        s = row.sampling
        if s.repetition_penalty != 1.0:
            seen = torch.tensor(sorted({*row.prompt, *row.tokens}), device=logits.device)
            score = logits[i, seen]
            logits[i, seen] = torch.where(score < 0, score * s.repetition_penalty, score / s.repetition_penalty)
        if eos and len(row.tokens) < s.min_new_tokens:
            logits[i, eos] = float("-inf")


def _draw(logits: torch.Tensor, tokens: torch.Tensor, sampled: list[int], rows: list[Any]) -> None:
    """Temperature, top-k and top-p per row, then each row's draw from its own generator."""
    settings = [rows[i].sampling for i in sampled]
    k = min(max(s.top_k for s in settings), logits.shape[-1])
    index = torch.tensor(sampled, device=logits.device)
    values, ids = torch.topk(logits.index_select(0, index), k)  # sorted, most likely first
    ks = torch.tensor([min(s.top_k, k) for s in settings], device=logits.device)
    values = values.masked_fill(torch.arange(k, device=logits.device)[None, :] >= ks[:, None], float("-inf"))
    temps = torch.tensor([s.temperature for s in settings], device=logits.device, dtype=values.dtype)
    probs = torch.softmax(values / temps[:, None], dim=-1)
    top_p = torch.tensor([s.top_p for s in settings], device=logits.device, dtype=probs.dtype)
    # generate's rule (tokens whose ascending cumulative probability is at most 1 - top_p go), read in
    # descending order: a token stays while the probability of those more likely than it is under top_p.
    drop = (probs.cumsum(-1) - probs) >= top_p[:, None]
    drop[:, 0] = False
    probs = probs.masked_fill(drop, 0.0)
    for j, (i, s) in enumerate(zip(sampled, settings)):
        # Over the row's own top-k only: the draw consumes one random number per candidate, so a longer
        # vector (another row's larger k) would change which token a seed gives.
        pick = torch.multinomial(probs[j, :min(s.top_k, k)], 1, generator=rows[i].rng)
        tokens[i] = ids[j, pick[0]]


def _logprobs(raw: torch.Tensor, tokens: torch.Tensor, wants: list[int],
              rows: list[Any]) -> dict[int, tuple[float, list[tuple[int, float]]]]:
    """The model's log-probability of each chosen token (before sampling settings), and the top alternatives."""
    index = torch.tensor(wants, device=raw.device)
    lp = torch.log_softmax(raw.index_select(0, index), dim=-1)
    chosen = lp.gather(1, tokens.index_select(0, index)[:, None])[:, 0].tolist()
    most = max(rows[i].sampling.logprobs for i in wants)
    top_v, top_i = torch.topk(lp, most) if most else (lp[:, :0], lp[:, :0].long())
    out = {}
    for j, i in enumerate(wants):
        n = rows[i].sampling.logprobs
        alts = list(zip(top_i[j, :n].tolist(), top_v[j, :n].tolist()))
        out[i] = (chosen[j], alts)
    return out
