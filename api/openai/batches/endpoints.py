"""What a batch line's ``url`` runs: its request model, its job, its answer and its parameter names, the same
as the live route's (generation/, embeddings.py)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpuq.api.openai import calls, embeddings
from gpuq.api.openai.catalog import Resolved
from gpuq.api.openai.generation import answers, jobs
from gpuq.api.openai.generation.requests import ChatCompletionRequest, CompletionRequest
from gpuq.common.schemas import JobRequest
from gpuq.common.settings import Settings
from pydantic import BaseModel


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI endpoint as batch lines use it."""

    request: type[BaseModel]
    job: Callable[[Any, Resolved, Settings], JobRequest]
    answer: Callable[[str, int, Any, Any], dict[str, Any]]  # (job id, created, request, result) -> body
    param: calls.Params
    heavy: str  # the request field left out of what the batch keeps for answering


ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint(
        ChatCompletionRequest, jobs.chat_job,
        lambda job_id, created, req, result: answers.chat_completion(job_id, created, req.model, result, req.n),
        jobs.chat_param, "messages"),
    "/v1/completions": Endpoint(
        CompletionRequest, lambda req, model, _: jobs.completion_job(req, model),
        lambda job_id, created, req, result: answers.text_completion(job_id, created, req.model, result, req.n),
        jobs.completion_param, "prompt"),
    "/v1/embeddings": Endpoint(
        embeddings.EmbeddingRequest, lambda req, model, _: embeddings.embedding_job(req, model),
        lambda job_id, created, req, result: embeddings.embedding_list(req, result),
        embeddings.embedding_param, "input"),
}


def light(endpoint: Endpoint, request: BaseModel) -> dict[str, Any]:
    """What answering a line needs of its request (model, n, dimensions, ...), without its content."""
    return request.model_dump(mode="json", exclude={endpoint.heavy}, exclude_defaults=True)


def revived(endpoint: Endpoint, kept: dict[str, Any]) -> Any:
    """The request as ``light`` kept it (its content absent), for ``answer``."""
    return endpoint.request.model_construct(**kept)
