"""Image jobs against the Hub (push with a card, pipeline and LoRA by Hub id) and a worker's memory budget.

These run on their own stack: an API and a worker on Redis database 1 of the session's server, so they do not
compete with the session worker for the ``image`` queue, with the worker's Hugging Face client aimed at a
test Hub on loopback and a small GPUQ_IMAGE_MEMORY_BUDGET_PIXELS.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import KEY_A, MODEL_ROOT, SESSION_DIR
from tests.support.hf_client import point_hf_client_at
from tests.support.hub_server import HubServer
from tests.support.images import build_lora, digests, download, image_body, pixels, png_info, tiny_sd
from tests.support.jobs import run
from tests.support.processes import start_api, start_worker, wait_for, worker_alive

SERVER_TOKEN, CALLER_TOKEN = "tok-server-alice", "tok-caller-bob"
BUDGET = 64 * 64 * 2 * 2  # two 64x64 images under classifier-free guidance


@pytest.fixture(scope="module")
def hub() -> Iterator[HubServer]:
    with HubServer({SERVER_TOKEN: "alice", CALLER_TOKEN: "bob"}) as server:
        yield server


@pytest.fixture(scope="module")
def sd() -> Path:
    return tiny_sd(MODEL_ROOT)


@pytest.fixture(scope="module")
def side(service_env: dict[str, str], log_dir: Path, redis_url: str, hub: HubServer,
         sd: Path) -> Iterator[httpx.Client]:
    """API + worker on their own Redis database, the worker's Hub client aimed at the test Hub."""
    url = redis_url.rsplit("/", 1)[0] + "/1"
    env = {**service_env, **hub.client_env(SESSION_DIR / "hf-image-side"), "GPUQ_REDIS_URL": url,
           "GPUQ_HF_TOKEN": SERVER_TOKEN, "GPUQ_HUB_NAMESPACES": "alpha:alice",
           "GPUQ_IMAGE_MEMORY_BUDGET_PIXELS": str(BUDGET)}
    worker = start_worker(env, log_dir, "imageside")
    api = None
    try:
        wait_for(lambda: worker_alive(url, "imageside@"), 90, "image-side worker heartbeat")
        api, api_url = start_api(env, log_dir)
        headers = {"Authorization": f"Bearer {KEY_A}"}
        with httpx.Client(base_url=api_url, headers=headers, timeout=60) as client:
            yield client
    finally:
        if api is not None:
            api.stop()
        worker.stop()


@pytest.fixture()
def hf(hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """This process's huggingface_hub client aimed at the test Hub (to seed repos and read pushes back)."""
    point_hf_client_at(monkeypatch, hub, tmp_path / "hf_home")
    return hub


def _ok(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    job = run(client, body)
    assert job["status"] == "succeeded", job
    return job


def _hub_file(repo_id: str, filename: str, repo_type: str, token: str) -> bytes:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, filename, repo_type=repo_type, token=token)).read_bytes()


def test_push_to_a_dataset_repo_with_card_and_metadata(side: httpx.Client, hf: HubServer, sd: Path) -> None:
    push = {"repo_id": "alice/fox-pictures", "repo_type": "dataset", "private": True}
    job = _ok(side, image_body(str(sd), num_images=2, negative_prompt="blurry", push_to_hub=push))
    pushed = job["result"]["hub"]
    assert pushed["repo_id"] == "alice/fox-pictures" and pushed["repo_type"] == "dataset"
    assert pushed["commit_sha"] == hf.head("alice/fox-pictures", repo_type="dataset")
    for img in job["result"]["images"]:
        data = _hub_file("alice/fox-pictures", img["artifact"], "dataset", SERVER_TOKEN)
        assert data == download(side, job["id"], img["artifact"])
        assert png_info(data)[1]["seed"] == img["seed"]
    readme = _hub_file("alice/fox-pictures", "README.md", "dataset", SERVER_TOKEN).decode()
    assert "task_categories:" in readme and "a red fox in the snow" in readme and job["id"] in readme
    assert "| 7 |" in readme and "| 8 |" in readme and "blurry" in readme  # seeds of both images
    rows = [json.loads(line) for line in
            _hub_file("alice/fox-pictures", "metadata.jsonl", "dataset", SERVER_TOKEN).decode().splitlines()]
    assert [r["file_name"] for r in rows] == ["images/image-0.png", "images/image-1.png"]
    assert {r["prompt"] for r in rows} == {"a red fox in the snow"}


def test_push_into_a_model_repo_folder_with_the_callers_own_token(side: httpx.Client, hf: HubServer,
                                                                  sd: Path) -> None:
    push = {"repo_id": "bob/samples", "token": CALLER_TOKEN, "path_in_repo": "runs/first"}
    job = _ok(side, image_body(str(sd), push_to_hub=push))
    assert CALLER_TOKEN not in json.dumps(job)  # sealed in the record, never echoed
    files = hf.repo_files("bob/samples")
    expected = {"README.md", "metadata.jsonl", "images/image-0.png"}
    assert {f"runs/first/{name}" for name in expected} <= set(files)
    assert files["runs/first/images/image-0.png"] == download(side, job["id"], "images/image-0.png")
    assert job["result"]["hub"]["path_in_repo"] == "runs/first"


def test_pipeline_and_lora_load_by_hub_id_through_the_hf_cache(side: httpx.Client, hf: HubServer,
                                                               sd: Path) -> None:
    from huggingface_hub import HfApi

    lora = build_lora(sd, MODEL_ROOT / "sd-lora")
    api = HfApi(token=SERVER_TOKEN)
    for repo_id, folder in (("alice/tiny-sd", sd), ("alice/tiny-sd-lora", lora)):
        api.create_repo(repo_id, private=False, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    local = _ok(side, image_body(str(sd), seed=4))
    by_id = _ok(side, image_body("alice/tiny-sd", seed=4))
    assert by_id["model"] == "alice/tiny-sd" and by_id["timings"]["model_load_ms"] > 0
    assert png_info(download(side, by_id["id"], "images/image-0.png"))[1]["model"] == "alice/tiny-sd"
    assert _pixels(side, by_id) == _pixels(side, local)  # same weights, whichever way they were found
    local_lora = _ok(side, image_body(str(sd), seed=4, adapter=str(lora)))
    hub_lora = _ok(side, image_body("alice/tiny-sd", seed=4, adapter="alice/tiny-sd-lora"))
    assert hub_lora["timings"]["model_load_ms"] == 0
    assert _pixels(side, hub_lora) == _pixels(side, local_lora) != _pixels(side, local)


def _pixels(client: httpx.Client, job: dict[str, Any]) -> bytes:
    return pixels(download(client, job["id"], "images/image-0.png"))


def test_job_over_the_workers_memory_budget_fails_and_the_worker_keeps_serving(side: httpx.Client,
                                                                               sd: Path) -> None:
    big = run(side, image_body(str(sd), width=128, height=128))
    assert big["status"] == "failed"
    assert big["error"]["type"] == "resource_exhausted"
    assert "GPUQ_IMAGE_MEMORY_BUDGET_PIXELS" in big["error"]["message"]
    assert not big["artifacts"]
    small = _ok(side, image_body(str(sd), num_images=2))
    assert small["worker"] == big["worker"]  # same process: it kept serving
    assert len(digests(small)) == 2


def test_refused_push_fails_the_job_but_keeps_the_images(side: httpx.Client, hf: HubServer, sd: Path) -> None:
    push = {"repo_id": "alice/not-bobs", "token": CALLER_TOKEN}  # bob may not write to alice's namespace
    job = run(side, image_body(str(sd), push_to_hub=push))
    assert job["status"] == "failed" and job["error"]["type"] == "hub_auth_error", job
    assert [a["name"] for a in job["artifacts"]] == ["images/image-0.png"]
