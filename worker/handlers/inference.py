"""Handler for the ``inference`` kind: transformers pipelines kept resident in the worker."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker import adapters
from worker import telemetry
from worker.context import JobContext
from worker.device import device, torch_dtype
from worker.models import ModelKey, get_cache

# Aliases resolve to the pipeline task transformers registers.
CANONICAL_TASK = {"sentiment-analysis": "text-classification"}


def _load_pipeline(model: str, task: str, revision: str | None, dtype: str) -> Callable[[], Any]:
    def load() -> Any:
        from transformers import pipeline

        return pipeline(task, model=model, revision=revision, device=device(), dtype=torch_dtype(dtype),
                        trust_remote_code=False)
    return load


def _key(model: str, task: str, revision: str | None, dtype: str) -> ModelKey:
    return ModelKey(model, revision, CANONICAL_TASK.get(task, task), str(torch_dtype(dtype)), device())


def _pipeline(ctx: JobContext) -> Any:
    task = CANONICAL_TASK.get(ctx.params["task"], ctx.params["task"])
    dtype, revision = ctx.params.get("dtype", "auto"), ctx.params.get("revision")
    return ctx.resident(_key(ctx.model, task, revision, dtype), _load_pipeline(ctx.model, task, revision, dtype))


def preload(model: str, task: str) -> None:
    """Load ``model`` for ``task`` into the resident cache under the key a default job would use."""
    task = CANONICAL_TASK.get(task, task)
    get_cache().get(_key(model, task, None, "auto"), _load_pipeline(model, task, None, "auto"))


def _chunks(ctx: JobContext, texts: list[str], fn: Callable[[list[str]], list[Any]]) -> list[Any]:
    """Run ``fn`` over batches, reporting progress (and honouring cancellation) after each."""
    size = int(ctx.params.get("batch_size", 8))
    out: list[Any] = []
    for start in range(0, len(texts), size):
        chunk = texts[start:start + size]
        out.extend(fn(chunk))
        telemetry.observe_batch(len(chunk))
        ctx.progress(len(out), len(texts), unit="inputs")
    return out


def _classify(ctx: JobContext, pipe: Any, texts: list[str]) -> list[Any]:
    top_k = ctx.params.get("top_k", 1)

    def batch(items: list[str]) -> list[Any]:
        preds = pipe(items, top_k=top_k, truncation=True, batch_size=len(items))
        return [[{"label": p["label"], "score": float(p["score"])} for p in row] for row in preds]
    return _chunks(ctx, texts, batch)


def _generate(ctx: JobContext, pipe: Any, texts: list[str]) -> list[Any]:
    import transformers

    p = ctx.params
    if p.get("seed") is not None:
        transformers.set_seed(int(p["seed"]))
    kwargs = {k: p[k] for k in ("max_new_tokens", "do_sample", "num_beams", "temperature", "top_p", "top_k",
                                "repetition_penalty") if p.get(k) is not None}
    if pipe.tokenizer.pad_token_id is None:
        pipe.tokenizer.pad_token = pipe.tokenizer.eos_token

    if p.get("stream") and len(texts) == 1:
        kwargs["streamer"] = _token_stream(ctx, pipe.tokenizer)

    def batch(items: list[str]) -> list[Any]:
        outs = pipe(items, return_full_text=p.get("return_full_text", False), batch_size=len(items),
                    pad_token_id=pipe.tokenizer.pad_token_id, **kwargs)
        return [{"generated_text": o[0]["generated_text"]} for o in outs]
    return _chunks(ctx, texts, batch)


def _token_stream(ctx: JobContext, tokenizer: Any) -> Any:
    """A transformers streamer that appends each finished piece of text as an ``output`` event."""
    from transformers import TextStreamer

    class ToEvents(TextStreamer):  # type: ignore[misc]
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                ctx.output(text=text)
            ctx.check_cancelled()  # a streamed generation can stop between tokens

    return ToEvents(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _embed(ctx: JobContext, pipe: Any, texts: list[str]) -> list[Any]:
    import torch

    normalize, pooling = bool(ctx.params.get("normalize")), ctx.params.get("pooling", "mean")

    def batch(items: list[str]) -> list[Any]:
        enc = pipe.tokenizer(items, padding=True, truncation=True, return_tensors="pt").to(pipe.device)
        with torch.inference_mode():
            hidden = pipe.model(**enc).last_hidden_state.float()
        if pooling == "cls":
            emb = hidden[:, 0]
        else:
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if normalize:
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        return [[round(float(x), 7) for x in row] for row in emb.cpu().tolist()]
    return _chunks(ctx, texts, batch)


RUNNERS: dict[str, Callable[[JobContext, Any, list[str]], list[Any]]] = {
    "text-classification": _classify,
    "text-generation": _generate,
    "feature-extraction": _embed,
}


# GPUQ_PRELOAD entries this handler can load (worker/preload.py).
PRELOAD_TASKS = frozenset(RUNNERS) | frozenset(CANONICAL_TASK)


def run(ctx: JobContext) -> Any:
    """Run the requested pipeline task; a single string input gets a single result back."""
    pipe = _pipeline(ctx)
    single = isinstance(ctx.inputs, str)
    texts = [ctx.inputs] if single else list(ctx.inputs)
    task = CANONICAL_TASK.get(ctx.params["task"], ctx.params["task"])
    with adapters.applied(ctx, pipe.model):
        outputs = RUNNERS[task](ctx, pipe, texts)
    return outputs[0] if single else outputs
