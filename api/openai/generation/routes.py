"""``POST /v1/chat/completions`` and ``POST /v1/completions``: each call one gpuq inference job.

Without ``stream`` the call waits for its job (``GPUQ_OPENAI_WAIT_S``) and answers with the finished object;
with it, the job's events become the stream. Either way the job is an ordinary one (``X-Gpuq-Job-Id``,
``Location``): visible in ``/v1/jobs``, cancellable, routed to a worker holding the model.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from gpuq.api.body import Reader
from gpuq.api.deps import job_store
from gpuq.api.openai import calls, catalog, streaming
from gpuq.api.openai.errors import OpenAIRoute
from gpuq.api.openai.generation import answers, jobs
from gpuq.api.openai.generation.requests import ChatCompletionRequest, CompletionRequest
from gpuq.api.openai.respond import json_answer
from gpuq.api.submission import Submitted
from gpuq.common.records import JobStore
from gpuq.common.settings import Settings, get_settings

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)


# The create routes read their bodies and callers themselves (api/body.py): FastAPI's parameter resolution
# per request cost as much as the rest of the route's own work.
_CHAT = Reader(ChatCompletionRequest, ())
_COMPLETION = Reader(CompletionRequest, ())


@router.post("/chat/completions", openapi_extra=_CHAT.openapi({}))
async def chat_completions(request: Request) -> Response:
    """OpenAI chat completion on the model's chat template (``stream``, ``n``, ``stop``, ``seed``, ...)."""
    body, tenant = await _CHAT.call(request)
    settings, store = get_settings(), job_store()
    done = await _accept_chat(body, request, tenant, store, settings)
    created, n_choices = _created(done), body.n
    if body.stream:
        chunks = answers.ChatStream(f"chatcmpl-{done.job_id}", created, body.model, n_choices, body.n,
                                    body.include_usage)
        return streaming.respond(request, done, tenant, store, chunks, jobs.chat_param)
    _, result = await calls.result_of(done, tenant, settings, jobs.chat_param)
    return json_answer(answers.chat_completion(done.job_id, created, body.model, result, body.n), done)


@router.post("/completions", openapi_extra=_COMPLETION.openapi({}))
async def completions(request: Request) -> Response:
    """OpenAI (legacy) text completion of one prompt or a list of them."""
    body, tenant = await _COMPLETION.call(request)
    settings, store = get_settings(), job_store()
    done = await _accept_completion(body, request, tenant, store, settings)
    created, n_choices = _created(done), len(body.prompts) * body.n
    if body.stream:
        chunks = answers.CompletionStream(f"cmpl-{done.job_id}", created, body.model, n_choices, body.n,
                                          body.include_usage, body.prompts if body.echo else None)
        return streaming.respond(request, done, tenant, store, chunks, jobs.completion_param)
    _, result = await calls.result_of(done, tenant, settings, jobs.completion_param)
    return json_answer(answers.text_completion(done.job_id, created, body.model, result, body.n), done)


async def _accept_chat(body: ChatCompletionRequest, request: Request, tenant: str, store: JobStore,
                       settings: Settings) -> Submitted:
    model = await catalog.resolve_on_loop(body.model, tenant, store, settings)
    job = jobs.chat_job(body, model, settings)
    return await calls.accept(request, "chat", job, tenant, settings, jobs.chat_param)


async def _accept_completion(body: CompletionRequest, request: Request, tenant: str, store: JobStore,
                             settings: Settings) -> Submitted:
    model = await catalog.resolve_on_loop(body.model, tenant, store, settings)
    return await calls.accept(request, "completions", jobs.completion_job(body, model), tenant, settings,
                              jobs.completion_param)


def _created(done: Submitted) -> int:
    timings: dict[str, Any] = done.fields.get("timings") or {}
    return int(timings.get("submitted_at") or 0)
