"""The forward passes of an engine step (a prompt's prefill, a decode over every row) and what follows each
token: sampling, end conditions, streamed text."""
from __future__ import annotations

from typing import Any

import torch

from gpuq.worker import adapters
from gpuq.worker.generation import sampling
from gpuq.worker.generation.cache import attention_mask
from gpuq.worker.generation.sequence import LENGTH, STOP, Sequence


def prefill(engine: Any, seq: Sequence, row: int) -> torch.Tensor:
    """Run ``seq``'s prompt into cache row ``row``; the logits of its last position, ``[1, vocab]``."""
    plan, device, n = engine.cache.plan, engine.shape.device, len(seq.prompt)
    plan.decode, plan.row, plan.start = False, row, 0
    causal = torch.ones(n, n, dtype=torch.bool, device=device).tril_()
    logits = forward(engine, [seq.adapter], input_ids=torch.tensor([seq.prompt], device=device),
                     position_ids=torch.arange(n, device=device)[None, :],
                     attention_mask=attention_mask(causal[None, None], engine.attention, engine.shape.dtype),
                     logits_to_keep=1)
    seq.position = n
    return logits[:, -1]


def decode(engine: Any, rows: int) -> torch.Tensor:
    """One token for each of the first ``rows`` running sequences; their logits, ``[rows, vocab]``."""
    plan, running = engine.cache.plan, engine.running
    positions = engine._positions[:rows]
    plan.decode, plan.rows, plan.positions = True, rows, positions
    plan.span = max(s.position for s in running) + 1
    valid = torch.arange(plan.span, device=positions.device)[None, :] <= positions[:, None]
    logits = forward(engine, [s.adapter for s in running], input_ids=engine._tokens[:rows, None],
                     position_ids=positions[:, None],
                     attention_mask=attention_mask(valid[:, None, None, :], engine.attention, engine.shape.dtype))
    return logits[:, -1]


def forward(engine: Any, names: list[str | None], **kwargs: Any) -> torch.Tensor:
    """Call the model over the engine's cache; rows with adapters go through peft's mixed-adapter batch."""
    with adapters.mixed(engine.model) as peft:
        if peft is None:
            out = engine.model(cache=engine.cache.cache, use_cache=True, **kwargs)
        else:
            out = peft(cache=engine.cache.cache, use_cache=True, **kwargs,
                       adapter_names=[name or adapters.BASE_ROWS for name in names])
    return out.logits  # type: ignore[no-any-return]


def choose(engine: Any, rows: list[Sequence], logits: torch.Tensor) -> list[int]:
    """Each row's next token (and, for rows that asked, its log-probabilities)."""
    picked = sampling.choose(logits, rows, engine.eos)
    tokens: list[int] = picked.tokens.tolist()
    for i, (logprob, alternatives) in picked.logprobs.items():
        rows[i].logprobs.append((tokens[i], logprob, alternatives))
    return tokens


def accept(engine: Any, seq: Sequence, token: int, now: float) -> bool:
    """Take ``token`` into ``seq``; True when it ended the sequence."""
    seq.last_token_at = now
    if seq.first_token_at is None:
        seq.first_token_at = now
    if token in engine.eos_set and len(seq.tokens) >= seq.sampling.min_new_tokens:
        if len(seq.logprobs) > len(seq.tokens):
            seq.logprobs.pop()  # the end of sequence is no text token
        finish(seq, STOP, engine.emit)
        return True
    seq.tokens.append(token)
    if seq.tracker is not None and seq.tracker.push(token):
        finish(seq, STOP, engine.emit)
        return True
    if len(seq.tokens) >= seq.max_new_tokens:
        finish(seq, LENGTH, engine.emit)
        return True
    return False


def stream(engine: Any, rows: list[Sequence]) -> None:
    """Hand the new text of every streaming row to the engine's output sink, in one call."""
    if engine.emit is None:
        return
    events = []
    for seq in rows:
        if seq.stream and not seq.done and seq.tracker is not None:
            text = seq.tracker.delta(final=False)
            if text:
                events.append((seq.job.job_id, _event(seq, text)))
    if events:
        engine.emit(events)


def finish(seq: Sequence, reason: str, emit: Any = None) -> None:
    """End ``seq`` for ``reason``; a streaming sequence's last event carries the rest of its text and why it
    ended."""
    seq.finish_reason = reason
    if seq.tracker is not None:
        seq.tracker.close()
        if seq.stream and emit is not None and not seq.job.abandoned:
            emit([(seq.job.job_id, {**_event(seq, seq.tracker.delta(final=True)), "finish_reason": reason})])
    seq.job.wake()


def fail(seq: Sequence, error: BaseException) -> None:
    """End ``seq`` with an error (its job fails with it)."""
    seq.error = error
    seq.job.wake()


def _event(seq: Sequence, text: str) -> dict[str, Any]:
    event: dict[str, Any] = {"index": seq.index, "text": text}
    if seq.job.n > 1:
        event["choice"] = seq.choice
    return event
