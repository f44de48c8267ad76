"""The generation benchmark's workload, model and in-process baselines (bench/generation.py runs them).

The model is a GPT-2 built from its config with random weights and a word-level tokenizer of the same
vocabulary size (one token per word ``w<id>``), so a prompt has exactly the length asked for and every
baseline pays the real compute of that model; decoding is greedy with ``min_new_tokens = max_new_tokens``.
Times: a request's time to first token counts from its arrival; its inter-token latency is
``(last token - first token) / (tokens - 1)``; throughput is generated tokens over the time from the first
arrival to the last token.
"""
from __future__ import annotations

import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VOCAB = 50257


@dataclass
class Request:
    """One request of the workload, and what a run measured for it."""

    prompt: list[int]
    max_new_tokens: int
    arrive_s: float  # after the start of the run
    first_s: float | None = None  # first token, after the start
    last_s: float | None = None
    tokens: int = 0

    def text(self) -> str:
        return " ".join(f"w{t}" for t in self.prompt)


@dataclass
class Workload:
    requests: list[Request] = field(default_factory=list)

    def fresh(self) -> list[Request]:
        return [Request(r.prompt, r.max_new_tokens, r.arrive_s) for r in self.requests]


def workload(n: int, gap_s: float, prompt: tuple[int, int], new: tuple[int, int], seed: int = 16) -> Workload:
    """``n`` requests (fixed seed): the first half at once, the second half one every ``gap_s`` after it."""
    rng = random.Random(seed)
    out = Workload()
    for i in range(n):
        arrive = 0.0 if i < n // 2 else (i - n // 2 + 1) * gap_s
        out.requests.append(Request([rng.randrange(VOCAB - 1) for _ in range(rng.randint(*prompt))],
                                    rng.randint(*new), arrive))
    return out


def build_model(path: Path, layers: int, width: int, heads: int) -> Path:
    """A GPT-2 of that size with random weights and a word-level tokenizer, saved under ``path``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB - 1)} | {"<|endoftext|>": VOCAB - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=1024, n_embd=width, n_layer=layers, n_head=heads,
                        eos_token_id=VOCAB - 1, bos_token_id=VOCAB - 1, pad_token_id=VOCAB - 1)
    model = GPT2LMHeadModel(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=VOCAB - 1, pad_token_id=VOCAB - 1)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def load(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


class _Clock:
    """Times of every generated step of one ``generate`` call (the first ``put`` is the prompt)."""

    def __init__(self, start: float) -> None:
        self.start, self.steps, self._prompt = start, [], True

    def put(self, value: Any) -> None:
        if self._prompt:
            self._prompt = False
            return
        self.steps.append(time.perf_counter() - self.start)

    def end(self) -> None:
        return None


def _wait_until(start: float, at_s: float) -> None:
    delay = start + at_s - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def run_sequential(model: Any, reqs: list[Request]) -> float:
    """(a) ``generate`` one request at a time, in arrival order; returns the start time."""
    import torch

    start = time.perf_counter()
    for r in reqs:
        _wait_until(start, r.arrive_s)
        clock = _clock(start)
        with torch.inference_mode():
            model.generate(torch.tensor([r.prompt]), max_new_tokens=r.max_new_tokens,
                           min_new_tokens=r.max_new_tokens, do_sample=False, streamer=clock)
        _took(r, clock.steps, r.max_new_tokens)
    return start


def run_static(model: Any, reqs: list[Request], batch: int) -> float:
    """(b) gpuq's static batching: the requests that have arrived, up to ``batch``, left-padded into one
    ``generate`` that runs to its longest member; the next batch starts when it ends."""
    import torch

    start, queue = time.perf_counter(), list(reqs)
    while queue:
        _wait_until(start, queue[0].arrive_s)
        now = time.perf_counter() - start
        group = [r for r in queue if r.arrive_s <= now][:batch]
        queue = [r for r in queue if r not in group]
        width, longest = max(len(r.prompt) for r in group), max(r.max_new_tokens for r in group)
        ids = torch.full((len(group), width), VOCAB - 1)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for i, r in enumerate(group):
            ids[i, width - len(r.prompt):] = torch.tensor(r.prompt)
            mask[i, width - len(r.prompt):] = 1
        clock = _clock(start)
        with torch.inference_mode():
            model.generate(ids, attention_mask=mask, max_new_tokens=longest, min_new_tokens=longest,
                           do_sample=False, streamer=clock, pad_token_id=VOCAB - 1)
        for r in group:
            _took(r, clock.steps, r.max_new_tokens)
    return start


def run_library(model: Any, reqs: list[Request]) -> float:
    """(c) transformers' ContinuousBatchingManager, requests added as they arrive (started and warmed first)."""
    import torch
    from transformers import ContinuousBatchingConfig, GenerationConfig

    config = GenerationConfig(max_new_tokens=max(r.max_new_tokens for r in reqs), do_sample=False,
                              eos_token_id=-1, pad_token_id=VOCAB - 1)
    longest = max(len(r.prompt) + r.max_new_tokens for r in reqs)
    # Sized for the workload: on CPU its defaults size the cache and static buffers from host memory, which
    # took it tens of seconds to set up here. 2048 tokens per batch mixes prompt chunks with decode steps.
    cb = ContinuousBatchingConfig(num_blocks=len(reqs) * (-(-longest // 256)) + 8, max_batch_tokens=2048)
    with torch.inference_mode():
        manager = model.init_continuous_batching(generation_config=config, continuous_batching_config=cb)
        manager.start()
        manager.add_request(reqs[0].prompt, request_id="warm", max_new_tokens=2)
        while not ((got := manager.get_result(timeout=5)) and got.is_finished()):
            pass
        start = time.perf_counter()
        feeder = threading.Thread(target=_feed, args=(manager, reqs, start))
        feeder.start()
        done = 0
        while done < len(reqs):
            out = manager.get_result(timeout=1)
            if out is not None and out.is_finished():
                r = reqs[int(out.request_id)]
                _took(r, [t - start for t in out.timestamps or []], len(out.generated_tokens))
                done += 1
        feeder.join()
        manager.stop(block=True)
    return start


def run_engine(model: Any, reqs: list[Request]) -> float:
    """(f) gpuq's continuous-batching engine called directly, no queue: the scheduler alone against (c)."""
    from gpuq.worker.generation.cache import probe_shape
    from gpuq.worker.generation.engine import Engine, Limits
    from gpuq.worker.generation.sampling import Sampling
    from gpuq.worker.generation.sequence import JobHandle, Sequence

    attention = model.config._attn_implementation
    shape = probe_shape(model, model.config.num_hidden_layers, attention)
    engine = Engine(model, shape, Limits(1 << 34, 64, 1024), lambda n: True, attention, [VOCAB - 1], "bench")
    job = JobHandle(None)
    seqs = [Sequence(r.prompt, r.max_new_tokens, Sampling(min_new_tokens=r.max_new_tokens), job, i)
            for i, r in enumerate(reqs)]
    start = time.perf_counter()
    for r, seq in zip(reqs, seqs):
        _wait_until(start, r.arrive_s)
        seq.arrived = time.monotonic()
        engine.submit([seq])
    while not all(s.done for s in seqs):
        job.event.wait(0.05)
        job.event.clear()
    offset = time.monotonic() - time.perf_counter()  # sequences stamp tokens on the monotonic clock
    for r, seq in zip(reqs, seqs):
        r.first_s = (seq.first_token_at or 0.0) - offset - start
        r.last_s, r.tokens = (seq.last_token_at or 0.0) - offset - start, len(seq.tokens)
    return start


def _feed(manager: Any, reqs: list[Request], start: float) -> None:
    for i, r in enumerate(reqs):
        _wait_until(start, r.arrive_s)
        manager.add_request(r.prompt, request_id=str(i), max_new_tokens=r.max_new_tokens, record_timestamps=True)


def _clock(start: float) -> Any:
    from transformers.generation.streamers import BaseStreamer

    class Clock(_Clock, BaseStreamer):  # type: ignore[misc]
        pass
    return Clock(start)


def _took(r: Request, steps: list[float], tokens: int) -> None:
    own = steps[:tokens]
    r.first_s, r.last_s, r.tokens = own[0], own[-1], len(own)


def summary(reqs: list[Request]) -> dict[str, float]:
    """Tokens/s, time to first token p50/p95 and inter-token latency p50 (ms) of a finished run."""
    ttft = sorted((r.first_s - r.arrive_s) * 1000 for r in reqs if r.first_s is not None)
    itl = [(r.last_s - r.first_s) / (r.tokens - 1) * 1000 for r in reqs
           if r.first_s is not None and r.last_s is not None and r.tokens > 1]
    span = max(r.last_s or 0.0 for r in reqs) - min(r.arrive_s for r in reqs)
    return {"tokens": sum(r.tokens for r in reqs), "tokens_per_s": sum(r.tokens for r in reqs) / span,
            "ttft_p50_ms": statistics.median(ttft), "ttft_p95_ms": ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))],
            "itl_p50_ms": statistics.median(itl), "seconds": span}
