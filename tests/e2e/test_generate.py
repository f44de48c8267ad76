"""``/generate``: the seed's convenience API, answered through the queue by a real worker and model."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import KEY_A
from tests.support.jobs import submit, wait_status
from tests.support.processes import start_api


def test_get_generate_returns_the_generated_text(client: httpx.Client, models: dict[str, str]) -> None:
    resp = client.get("/generate", params={"prompt": "the worker"})
    assert resp.status_code == 200, resp.text
    assert list(resp.json()) == ["result"] and isinstance(resp.json()["result"], str)
    job = client.get(resp.headers["Location"]).json()
    assert job["status"] == "succeeded" and job["params"]["task"] == "text-generation"
    assert job["model"] == models["gpt2"] and job["result"]["generated_text"] == resp.json()["result"]


def test_post_generate_takes_a_form(client: httpx.Client, models: dict[str, str]) -> None:
    resp = client.post("/generate", data={"prompt": "a queue"})
    assert resp.status_code == 200 and isinstance(resp.json()["result"], str)
    assert client.post("/generate", data={}).status_code == 422


def test_generate_needs_an_api_key(anon: httpx.Client) -> None:
    assert anon.get("/generate", params={"prompt": "hi"}).status_code == 401


@pytest.fixture(scope="module")
def impatient_api(service_env: dict[str, str], log_dir: Path, worker: object) -> Iterator[httpx.Client]:
    """An API whose /generate gives up after half a second."""
    svc, url = start_api({**service_env, "GPUQ_GENERATE_TIMEOUT_S": "0.5"}, log_dir)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60) as c:
        yield c
    svc.stop()


def test_generate_timeout_is_a_clear_504_and_the_job_goes_on(impatient_api: httpx.Client,
                                                             models: dict[str, str]) -> None:
    blocker = submit(impatient_api, {"kind": "synthetic", "model": "none", "params": {"steps": 30, "step_ms": 100}})
    resp = impatient_api.get("/generate", params={"prompt": "slow"})
    assert resp.status_code == 504
    error = resp.json()["error"]
    assert error["type"] == "wait_timeout" and "0.5 s" in error["message"]
    assert resp.headers["Location"] == f"/v1/jobs/{error['job_id']}"
    impatient_api.post(f"/v1/jobs/{blocker['id']}/cancel")
    assert wait_status(impatient_api, error["job_id"])["status"] == "succeeded"


@pytest.mark.parametrize("model", ["", "var/models/gpt2", "/nowhere/gpt2"], ids=["unset", "relative", "absent"])
def test_generate_without_a_usable_model_is_a_503_naming_the_setting(service_env: dict[str, str], log_dir: Path,
                                                                     worker: object, model: str) -> None:
    # "relative" is what `gpuq up` without --demo configures: a directory the demo would have built.
    svc, url = start_api({**service_env, "GPUQ_GENERATE_MODEL": model}, log_dir)
    try:
        resp = httpx.get(f"{url}/generate", params={"prompt": "hi"}, headers={"Authorization": f"Bearer {KEY_A}"})
    finally:
        svc.stop()
    assert resp.status_code == 503, resp.text
    error = resp.json()["error"]
    assert error["field"] == "GPUQ_GENERATE_MODEL" and error["type"] == "not_configured"
    assert "GPUQ_GENERATE_MODEL" in error["message"] and error["retryable"] is False
