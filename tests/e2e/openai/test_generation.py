"""/v1/chat/completions and /v1/completions through the official openai SDK against the real stack."""
from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import KEY_A
from tests.support.jobs import submit, wait_status
from tests.support.openai_sdk import async_client

GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 12}
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "where is the queue"}]


def test_chat_completion_is_a_gpuq_job_with_usage_and_finish_reason(oai: openai.OpenAI, client: httpx.Client,
                                                                    model: str) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, **GREEDY)
    answer = raw.parse()
    assert answer.object == "chat.completion" and answer.model == model and len(answer.choices) == 1
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.message.content and choice.finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 12
    assert answer.usage.prompt_tokens > 0 and answer.usage.total_tokens == answer.usage.prompt_tokens + 12
    job_id = raw.headers["x-gpuq-job-id"]
    assert answer.id == f"chatcmpl-{job_id}"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["kind"] == "inference" and job["params"]["task"] == "chat"
    assert job["result"][0]["generated_text"] == choice.message.content
    assert job_id in [j["id"] for j in client.get("/v1/jobs", params={"kind": "inference"}).json()["jobs"]]
    types = [e["type"] for e in _events(client, job_id)]
    assert types[0] == "queued" and types[-1] == "completed"


def _events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    from tests.support.jobs import sse_events

    return [{"type": e["event"], **e} for e in sse_events(client, job_id)]


def test_streamed_chat_deltas_add_up_to_the_greedy_answer(oai: openai.OpenAI, model: str) -> None:
    whole = oai.chat.completions.create(model=model, messages=MESSAGES, **GREEDY).choices[0].message.content
    chunks = list(oai.chat.completions.create(model=model, messages=MESSAGES, stream=True,
                                              stream_options={"include_usage": True}, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])


def test_stop_string_ends_the_answer_before_it(oai: openai.OpenAI, model: str) -> None:
    whole = oai.chat.completions.create(model=model, messages=MESSAGES, **GREEDY).choices[0].message.content
    assert whole and len(whole.strip()) > 2
    stop = whole.strip()[1:3]
    cut = oai.chat.completions.create(model=model, messages=MESSAGES, stop=[stop], **GREEDY).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == whole[:whole.index(stop)]


def test_n_choices_and_seed_reproduce_sampled_answers(oai: openai.OpenAI, model: str) -> None:
    ask: dict[str, Any] = {"model": model, "messages": MESSAGES, "n": 2, "seed": 7, "temperature": 1.0,
                           "max_tokens": 8}
    first, again = oai.chat.completions.create(**ask), oai.chat.completions.create(**ask)
    assert [c.index for c in first.choices] == [0, 1]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert first.usage is not None and 0 < first.usage.completion_tokens <= 16  # a sample may end early


def test_completions_stream_and_not_with_several_prompts(oai: openai.OpenAI, model: str) -> None:
    prompts = ["the worker", "a queue of"]
    whole = oai.completions.create(model=model, prompt=prompts, temperature=0, max_tokens=6)
    assert whole.object == "text_completion" and [c.index for c in whole.choices] == [0, 1]
    streamed = ["", ""]
    for chunk in oai.completions.create(model=model, prompt=prompts, temperature=0, max_tokens=6, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
    assert streamed == [c.text for c in whole.choices]
    echoed = oai.completions.create(model=model, prompt=prompts[0], temperature=0, max_tokens=6, echo=True)
    assert echoed.choices[0].text == prompts[0] + whole.choices[0].text


def test_async_client_streams_and_completes(api_url: str, model: str) -> None:
    async def scenario() -> tuple[str, str]:
        async with async_client(api_url, KEY_A) as aoai:
            whole = await aoai.chat.completions.create(model=model, messages=MESSAGES, **GREEDY)
            stream = await aoai.chat.completions.create(model=model, messages=MESSAGES, stream=True, **GREEDY)
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return whole.choices[0].message.content or "", "".join(parts)

    whole, streamed = asyncio.run(scenario())
    assert whole and streamed == whole


def test_closing_a_stream_cancels_its_job(oai: openai.OpenAI, client: httpx.Client, model: str) -> None:
    blocker = submit(client, {"kind": "synthetic", "model": "none", "params": {"steps": 40, "step_ms": 100}})
    try:
        stream = oai.chat.completions.create(model=model, messages=MESSAGES, stream=True, **GREEDY)
        first = next(iter(stream))
        job_id = first.id.removeprefix("chatcmpl-")
        stream.close()
        job = wait_status(client, job_id, timeout=30)
        assert job["status"] == "cancelled" and job["cancel_requested"]
    finally:
        client.post(f"/v1/jobs/{blocker['id']}/cancel")


def test_logprobs_come_back_where_the_task_reports_them(oai: openai.OpenAI, model: str) -> None:
    from gpuq.api.openai.generation.jobs import LOGPROBS

    if not LOGPROBS:  # the generation task reports no log-probabilities yet: a clear 400, not a silent null
        with pytest.raises(openai.BadRequestError) as caught:
            oai.chat.completions.create(model=model, messages=MESSAGES, logprobs=True, top_logprobs=2, **GREEDY)
        assert caught.value.param == "logprobs"  # type: ignore[attr-defined]
        return
    answer = oai.chat.completions.create(model=model, messages=MESSAGES, logprobs=True, top_logprobs=2, **GREEDY)
    content = answer.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 12 and all(len(t.top_logprobs) == 2 for t in content)
    text = oai.completions.create(model=model, prompt="the worker", logprobs=2, **GREEDY).choices[0]
    assert text.logprobs is not None and len(text.logprobs.tokens or []) == 12


def test_async_completions_stream_with_usage_and_user(api_url: str, model: str) -> None:
    async def scenario() -> tuple[str, str, int]:
        async with async_client(api_url, KEY_A) as aoai:
            whole = await aoai.completions.create(model=model, prompt="a queue", user="u-1", **GREEDY)
            stream = await aoai.completions.create(model=model, prompt="a queue", stream=True, user="u-1",
                                                   stream_options={"include_usage": True}, **GREEDY)
            chunks = [c async for c in stream]
            usage = chunks[-1].usage.completion_tokens if chunks[-1].usage else 0
            return whole.choices[0].text, "".join(c.choices[0].text for c in chunks if c.choices), usage

    whole, streamed, usage = asyncio.run(scenario())
    assert streamed == whole and usage == 12
