"""OpenAI generation requests as gpuq ``inference`` jobs: ``chat`` for chat completions, ``text-generation``
for completions, and gpuq's field names mapped back to OpenAI's parameters for errors.

``n`` choices: where the task draws several sequences per input itself (its params have ``n``) the job asks
for them; otherwise each input is repeated ``n`` times. Either way choice ``k`` of the answer is the k-th
sequence in input order (``answers.choices_of``).
"""
from __future__ import annotations

from typing import Any

from gpuq.api.openai import calls
from gpuq.api.openai.catalog import Resolved
from gpuq.api.openai.generation.requests import ChatCompletionRequest, CompletionRequest, _Generation
from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.inference import TextGenerationParams
from gpuq.common.schemas import JobRequest
from gpuq.common.settings import Settings

PER_INPUT_N = "n" in TextGenerationParams.model_fields  # the task draws n sequences per input itself
LOGPROBS = "logprobs" in TextGenerationParams.model_fields  # the task reports token log-probabilities
COMPLETIONS_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
_PARAMS = {"max_new_tokens": "max_tokens", "do_sample": "temperature"}


def chat_job(req: ChatCompletionRequest, model: Resolved, settings: Settings) -> JobRequest:
    """The chat task on the request's messages."""
    limit = req.max_completion_tokens or req.max_tokens or settings.openai_max_tokens_default
    params = _generation(req, model, limit)
    if req.logprobs:
        params["logprobs"] = _logprobs(req.top_logprobs or 0)
    inputs, extra = _choices([req.messages], req.n)
    return calls.job_request("inference", model.model, {"task": "chat", **params, **extra}, chat_param,
                             inputs)


def completion_job(req: CompletionRequest, model: Resolved) -> JobRequest:
    """The text-generation task on the request's prompts."""
    if req.best_of not in (None, req.n):
        raise InvalidInput("best_of: gpuq returns every sequence it draws; best_of must equal n", field="best_of")
    params = _generation(req, model, req.max_tokens or COMPLETIONS_MAX_TOKENS)
    if req.logprobs is not None:
        params["logprobs"] = _logprobs(req.logprobs)
    if req.echo:
        params["return_full_text"] = True
    inputs, extra = _choices(req.prompts, req.n)
    return calls.job_request("inference", model.model, {"task": "text-generation", **params, **extra},
                             completion_param, inputs)


def chat_param(field: str) -> str:
    """The chat completion parameter a gpuq field stands for (``inputs.0.2.role`` -> ``messages.2.role``)."""
    if field == "inputs" or field.startswith("inputs."):
        return ".".join(["messages", *field.split(".")[2:]])
    return _param(field)


def completion_param(field: str) -> str:
    """The completion parameter a gpuq field stands for (``inputs.<k>`` -> ``prompt``)."""
    return "prompt" if field == "inputs" or field.startswith("inputs.") else _param(field)


def _param(field: str) -> str:
    name = field.removeprefix("params.")
    head, _, rest = name.partition(".")
    if head in ("adapter", "model"):
        return "model"  # a fine-tune's adapter is part of its ft: model id
    return ".".join(filter(None, [_PARAMS.get(head, head), rest]))


def _generation(req: _Generation, model: Resolved, max_tokens: int) -> dict[str, Any]:
    """Sampling, stops, seed and streaming; OpenAI samples at temperature 1 unless told otherwise."""
    params: dict[str, Any] = {"max_new_tokens": max_tokens}
    temperature = 1.0 if req.temperature is None else req.temperature
    if temperature > 0:
        params.update(do_sample=True, temperature=temperature)
        if req.top_p is not None:
            params["top_p"] = req.top_p
    if req.stop:
        params["stop"] = req.stop
    if req.seed is not None:
        params["seed"] = req.seed
    if req.stream:
        params["stream"] = True
    if model.adapter is not None:
        params["adapter"] = model.adapter
    return params


def _logprobs(top: int) -> int:
    if not LOGPROBS:
        raise InvalidInput("logprobs: not served by this deployment's generation task", field="logprobs")
    return top


def _choices(inputs: list[Any], n: int) -> tuple[list[Any], dict[str, Any]]:
    if n == 1:
        return inputs, {}
    if PER_INPUT_N:
        return inputs, {"n": n}
    return [item for item in inputs for _ in range(n)], {}


def per_input(n: int) -> int:
    """How many choices one result item (one input of the job) holds."""
    return n if PER_INPUT_N else 1
