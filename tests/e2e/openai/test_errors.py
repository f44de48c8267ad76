"""Errors on the OpenAI routes: OpenAI's shape, the SDK's exception classes, and the SDK's retries (and
Idempotency-Key) never making a second job."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import KEY_A, KEY_B
from tests.support.jobs import submit, wait_status
from tests.support.openai_sdk import sync_client
from tests.support.processes import start_api

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def strict_url(service_env: dict[str, str], log_dir: Path, worker: object) -> Iterator[str]:
    """An API that serves only listed models, and gives tenant beta one submit and then a slow refill."""
    quotas = json.dumps({"beta": {"submit_rate_per_s": 0.01, "submit_burst": 1}})
    svc, url = start_api({**service_env, "GPUQ_OPENAI_HUB_MODELS": "false", "GPUQ_TENANT_QUOTAS": quotas}, log_dir)
    yield url
    svc.stop()


def test_bad_parameter_is_bad_request_naming_it(oai: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model=model, messages=MESSAGES, temperature=5)
    assert caught.value.param == "temperature"  # type: ignore[attr-defined]
    assert caught.value.response.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model=model, messages=[{"role": "wizard", "content": "hi"}])
    assert caught.value.param == "messages.0.role"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model=model, messages=MESSAGES, max_tokens=10**6)
    assert caught.value.param == "max_tokens"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model=model, messages=MESSAGES, tools=[{"type": "function", "function": {
            "name": "f", "parameters": {}}}])
    assert caught.value.param == "tools"  # type: ignore[attr-defined]


def test_wrong_key_is_authentication_error(api_url: str, model: str) -> None:
    with sync_client(api_url, "not-a-key", max_retries=0) as bad, pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model=model, messages=MESSAGES)
    assert caught.value.code == "invalid_api_key"  # type: ignore[attr-defined]


def test_unknown_model_is_not_found(oai: openai.OpenAI, strict_url: str) -> None:
    for name in ("no/such/model/here", "ft:gpt2:alpha:" + "0" * 32):
        with pytest.raises(openai.NotFoundError) as caught:
            oai.chat.completions.create(model=name, messages=MESSAGES)
        assert caught.value.code == "model_not_found" and caught.value.param == "model"  # type: ignore[attr-defined]
    with sync_client(strict_url, KEY_A, max_retries=0) as strict, pytest.raises(openai.NotFoundError):
        strict.embeddings.create(model="gpt-4o", input="hi")


def test_quota_is_rate_limit_error_with_retry_after(strict_url: str, models: dict[str, str]) -> None:
    with sync_client(strict_url, KEY_B, max_retries=0) as limited:
        limited.embeddings.create(model=models["minilm"], input="first")
        with pytest.raises(openai.RateLimitError) as caught:
            limited.embeddings.create(model=models["minilm"], input="second")
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_idempotency_key_replays_the_job_and_refuses_another_body(oai: openai.OpenAI, model: str) -> None:
    key = {"Idempotency-Key": f"oai-{time.time_ns()}"}
    first = oai.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, max_tokens=3,
                                                          extra_headers=key)
    again = oai.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, max_tokens=3,
                                                          extra_headers=key)
    assert again.headers["x-gpuq-job-id"] == first.headers["x-gpuq-job-id"]
    assert again.headers["idempotent-replayed"] == "true" and again.parse().id == first.parse().id
    with pytest.raises(openai.ConflictError):
        oai.chat.completions.create(model=model, messages=MESSAGES, max_tokens=4, extra_headers=key)


def test_sdk_retries_after_timeouts_wait_on_the_first_job(api_url: str, client: httpx.Client, model: str) -> None:
    started = time.time()
    blocker = submit(client, {"kind": "synthetic", "model": "none", "params": {"steps": 20, "step_ms": 100}})
    with sync_client(api_url, KEY_A, max_retries=5, timeout=1.0) as impatient:
        answer = impatient.chat.completions.create(model=model, messages=MESSAGES, max_tokens=3)
    wait_status(client, blocker["id"])
    jobs = client.get("/v1/jobs", params={"kind": "inference", "limit": 50}).json()["jobs"]
    chats = [j["id"] for j in jobs if j["params"].get("task") == "chat" and j["timings"]["submitted_at"] >= started]
    assert chats == [answer.id.removeprefix("chatcmpl-")]


def test_a_job_that_fails_in_the_worker_is_an_internal_error_not_retried(api_url: str, client: httpx.Client,
                                                                         models: dict[str, str]) -> None:
    before = len(client.get("/v1/jobs", params={"kind": "image", "limit": 500}).json()["jobs"])
    with sync_client(api_url, KEY_A, max_retries=2) as oai, pytest.raises(openai.InternalServerError) as caught:
        oai.images.generate(model=models["gpt2"], prompt="a fox", size="256x256")
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(client.get("/v1/jobs", params={"kind": "image", "limit": 500}).json()["jobs"]) == before + 1


def test_error_shape_stays_gpuq_on_native_routes(client: httpx.Client) -> None:
    error = client.post("/v1/jobs", json={"kind": "inference", "model": "x/y", "params": {}}).json()["error"]
    assert error["type"] == "invalid_input" and "param" not in error and "retryable" in error


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/embeddings", '{"model": "%s", "input": "a \\ud800 b"}', "input"),
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "\\ud800"}]}', "messages"),
    ("/v1/completions", '{"model": "%s", "prompt": "x\\udfff"}', "prompt"),
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "stop": "\\ud800"}',
     "stop"),
])
def test_text_that_is_not_unicode_is_bad_request_naming_it(api_url: str, model: str, path: str, body: str,
                                                           param: str) -> None:
    """A lone surrogate (valid JSON escape, not Unicode text) is refused before anything is stored."""
    before = httpx.get(f"{api_url}/v1/jobs", headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30).json()
    got = httpx.post(f"{api_url}{path}", content=(body % model).encode(), timeout=30,
                     headers={"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"})
    assert got.status_code == 400, got.text
    error = got.json()["error"]
    assert error["param"] == param and "surrogate" in error["message"]
    after = httpx.get(f"{api_url}/v1/jobs", headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30).json()
    assert [j["id"] for j in after["jobs"]][:1] == [j["id"] for j in before["jobs"]][:1]
