"""A generation job on the engine: its inputs become sequences, its thread waits for them, reporting progress
in tokens, and builds the result (text, ``finish_reason``, ``usage``, optional choices and logprobs).

The job's thread never runs the model: it submits, then wakes when one of its sequences ends or its state
changes, and every ``TICK_S``, reporting progress at most every ``PROGRESS_S`` (and at once when it starts or
stops waiting for capacity). The engine stops a job's sequences at its next step once ``stop_reason`` says so:
a cancel or a drain seen by the progress writer, the job's deadline, or the job's thread giving up (an
exception while it waits: the watchdog's, Celery's soft time limit).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from gpuq.common.errors import InvalidInput, JobCancelled, JobTimeout
from gpuq.common.jobs.inference import ContinueParams, TaskParamsBase
from gpuq.worker import adapters
from gpuq.worker.context import JobContext
from gpuq.worker.generation.engine import Engine
from gpuq.worker.generation.outputs import get_pump
from gpuq.worker.generation.sampling import Sampling, generator
from gpuq.worker.generation.sequence import CANCELLED, TIMEOUT, JobHandle, Sequence
from gpuq.worker.generation.text import TextTracker
from gpuq.worker.progress_writer import writer_for

TICK_S = 0.25  # how often the job's thread looks at its sequences
PROGRESS_S = 1.0  # how often it reports progress while tokens come (each report costs Redis and Celery work)


class GenerationTask(Protocol):
    """What an inference task implements to run on the engine (text-generation, chat)."""

    def split(self, inputs: Any) -> tuple[list[Any], bool]: ...

    def prompt_ids(self, resident: Any, item: Any, params: ContinueParams, index: int) -> list[int]: ...

    def shape(self, item: Any, text: str, params: ContinueParams) -> dict[str, Any]: ...


def serves(task: Any, params: TaskParamsBase, engine_setting: str) -> bool:
    """Whether the engine runs this job (beam search and n-gram bans keep the static path)."""
    return (engine_setting == "continuous" and hasattr(task, "prompt_ids")
            and isinstance(params, ContinueParams) and params.num_beams == 1 and not params.no_repeat_ngram_size)


@dataclass
class GenerationJob:
    """A job's sequences on the engine."""

    ctx: JobContext
    task: GenerationTask
    resident: Any
    engine: Engine
    items: list[Any]
    single: bool
    seqs: list[Sequence]
    handle: JobHandle

    def wait(self) -> Any:
        """Block until every sequence ended; the job's result (or the reason it stopped, raised)."""
        try:
            self._follow()
        except BaseException:
            self.abandon()
            raise
        return self._result()

    def abandon(self) -> None:
        """The job is ending without its result: the engine drops its sequences at its next step, without
        output events (the job's terminal event, written next, must be the last of its stream)."""
        self.handle.abandoned = True
        self.engine.wake()

    def _follow(self) -> None:
        total = sum(s.max_new_tokens for s in self.seqs)
        reported: tuple[int, bool] = (0, False)
        next_at = time.monotonic() + PROGRESS_S
        while not all(s.done for s in self.seqs):
            self.handle.event.wait(TICK_S)
            self.handle.event.clear()
            # A wait is reported even when it ended before this thread woke up.
            waited, self.handle.waited = self.handle.waited, False
            state = (sum(len(s.tokens) for s in self.seqs),
                     waited or any(s.waiting_for_capacity for s in self.seqs))
            now = time.monotonic()
            if state[1] != reported[1] or now >= next_at:
                extra = {"state": "waiting_for_capacity"} if state[1] else {}
                self.ctx.progress(state[0], total, unit="tokens", **extra)
                reported, next_at = state, now + PROGRESS_S

    def _result(self) -> Any:
        ctx = self.ctx
        if any(s.stream for s in self.seqs) and ctx.job_id:
            get_pump().flush(ctx.job_id)  # every output event before the terminal one
        errors = [s.error for s in self.seqs if s.error is not None]
        if errors:
            raise errors[0]
        reasons = {s.finish_reason for s in self.seqs}
        if reasons & {CANCELLED, TIMEOUT}:
            ctx.progress(sum(len(s.tokens) for s in self.seqs), sum(s.max_new_tokens for s in self.seqs),
                         unit="tokens")  # raises what stopped it: cancel, drain, deadline
            raise JobTimeout("job exceeded its time limit") if TIMEOUT in reasons else JobCancelled("cancelled")
        ctx.record_fields["batch"] = {"jobs": self.handle.shared_jobs, "inputs": self.handle.shared_sequences,
                                      "passes": self.handle.steps}
        out = [self._item(i, item) for i, item in enumerate(self.items)]
        return out[0] if self.single else out

    def _item(self, index: int, item: Any) -> dict[str, Any]:
        seqs = sorted((s for s in self.seqs if s.index == index), key=lambda s: s.choice)
        params, tokenizer = self.ctx.params_as(ContinueParams), self.resident.tokenizer
        choices = [{"index": s.choice, **self.task.shape(item, _text(s, tokenizer), params),
                    "finish_reason": s.finish_reason, **_logprobs(s, tokenizer)} for s in seqs]
        first = {k: v for k, v in choices[0].items() if k != "index"}
        usage = {"prompt_tokens": len(seqs[0].prompt), "completion_tokens": sum(len(s.tokens) for s in seqs)}
        return {**first, "usage": usage, **({"choices": choices} if len(choices) > 1 else {})}


def start(ctx: JobContext, task: GenerationTask, resident: Any, engine: Engine) -> GenerationJob | None:
    """Submit the job's sequences; None when the static path must serve it (an adapter that is not LoRA)."""
    params = ctx.params_as(ContinueParams)
    source = adapters.source_for(ctx)
    if source is not None and not _is_lora(source.path):
        return None
    items, single = task.split(ctx.inputs)
    prompts = [task.prompt_ids(resident, item, params, i) for i, item in enumerate(items)]
    _check_positions(resident.model, prompts, params.max_new_tokens)
    handle = JobHandle(ctx.job_id, n=params.n)
    handle.stop_reason = _stop_reason(ctx, handle)
    seqs = _sequences(ctx, resident, engine, prompts, handle)
    for seq in seqs:
        engine.check_fits(seq, f"inputs.{seq.index}")
    ctx.progress(0, sum(s.max_new_tokens for s in seqs), unit="tokens")  # also: the flags the engine reads
    if source is not None:
        _pin(ctx, resident.model, source, seqs)
    job = GenerationJob(ctx, task, resident, engine, items, single, seqs, handle)
    try:
        engine.submit(seqs)
    except BaseException:  # a time limit landing here must not leave the sequences running for nobody
        job.abandon()
        raise
    return job


def _sequences(ctx: JobContext, resident: Any, engine: Engine, prompts: list[list[int]],
               handle: JobHandle) -> list[Sequence]:
    params, tokenizer = ctx.params_as(ContinueParams), resident.tokenizer
    stops, stream = tuple(params.stop), params.stream
    sampling, seed = Sampling.from_params(params), params.seed
    seqs = []
    for index, prompt in enumerate(prompts):
        for choice in range(handle.n):
            rng = generator(None if seed is None else seed + choice, engine.shape.device) \
                if sampling.do_sample else None
            tracker = TextTracker(tokenizer, stops) if stops or stream else None
            seqs.append(Sequence(prompt, params.max_new_tokens, sampling, handle, index, choice,
                                 stream, rng=rng, tracker=tracker))
    return seqs


def _stop_reason(ctx: JobContext, handle: JobHandle) -> Any:
    writer, job_id, deadline = writer_for(ctx.redis), ctx.job_id, ctx.deadline

    def reason() -> str | None:
        if handle.abandoned:
            return CANCELLED
        flags = writer.flags(job_id)
        if flags.cancel or flags.draining:
            return CANCELLED
        if deadline is not None and time.monotonic() > deadline:
            return TIMEOUT
        return None
    return reason


def _pin(ctx: JobContext, model: Any, source: adapters.AdapterSource, seqs: list[Sequence]) -> None:
    """Load the job's adapter beside the others on the resident base and hold it while its sequences run."""
    name = ""
    for seq in seqs:
        name, ms = adapters.pin_for_mixed(model, source, ctx.settings.adapter_cache_max)
        if ms:
            ctx.log(f"adapter loaded in {ms:.0f} ms on the resident base", adapter_load_ms=round(ms, 3))
        seq.adapter = name
        seq.release = lambda name=name: adapters.unpin(model, name)  # type: ignore[misc]


def _is_lora(path: Any) -> bool:
    """Whether the adapter is plain LoRA (what peft batches per row); others run on the static path."""
    import json

    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return False
    return config.get("peft_type") == "LORA" and not config.get("use_dora")


def _check_positions(model: Any, prompts: list[list[int]], max_new: int) -> None:
    limit = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    for i, prompt in enumerate(prompts):
        if limit and len(prompt) + max_new > limit:
            raise InvalidInput(f"inputs.{i}: a prompt of {len(prompt)} tokens and max_new_tokens {max_new} "
                               f"exceed the model's {limit} positions", field=f"inputs.{i}")


def _text(seq: Sequence, tokenizer: Any) -> str:
    if seq.tracker is not None:
        return seq.tracker.text
    return str(tokenizer.decode(seq.tokens, skip_special_tokens=True))


def _logprobs(seq: Sequence, tokenizer: Any) -> dict[str, Any]:
    if seq.sampling.logprobs is None:
        return {}

    def tok(token: int) -> str:
        return str(tokenizer.decode([token]))
    return {"logprobs": [{"token": tok(t), "logprob": lp, "top_logprobs": [{"token": tok(a), "logprob": v}
                                                                          for a, v in alts]}
                         for t, lp, alts in seq.logprobs]}

