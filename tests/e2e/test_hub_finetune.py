"""Fine-tunes against a Hub: private pulls with a per-job token, pinned shas, push + download back, served
adapters from the Hub, and the token never stored anywhere.

A dedicated API and worker run on Redis database 1 with the test Hub's client environment, so their jobs and
Celery queues never mix with the session worker's (which is offline).
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import KEY_A, SESSION_DIR
from tests.support.datasets import PROMPTS, completion_rows, encode
from tests.support.hf_client import point_hf_client_at
from tests.support.hub_server import HubServer
from tests.support.jobs import run, submit, wait_status
from tests.support.processes import Service, start_api, start_worker, wait_for, worker_alive

SECRET = "hf_alice_job_token_7f3a9c51e2"
BASE, DATA, OUT = "alice/tiny-gpt2", "alice/prompts", "alice/tiny-gpt2-lora"
LORA = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}


@pytest.fixture(scope="module")
def hub(models: dict[str, str]) -> Iterator[HubServer]:
    """The test Hub with a private base model and a private dataset owned by alice."""
    with HubServer({SECRET: "alice"}) as server:
        gpt2 = Path(models["gpt2"])
        server.seed_repo(BASE, {p.relative_to(gpt2).as_posix(): p.read_bytes() for p in gpt2.rglob("*")
                                if p.is_file()}, private=True)
        server.seed_repo(DATA, {"train.csv": encode(completion_rows(160), "csv"),
                                "test.csv": encode(completion_rows(20, seed=9), "csv")},
                         repo_type="dataset", private=True)
        yield server


@pytest.fixture(scope="module")
def stack(hub: HubServer, service_env: dict[str, str], log_dir: Path,
          redis_url: str) -> Iterator[tuple[httpx.Client, list[Service], str]]:
    """(client as tenant alpha, [worker, api], redis url of database 1)."""
    url = redis_url.rsplit("/", 1)[0] + "/1"
    env = {**service_env, **hub.client_env(SESSION_DIR / "hf-hub-worker"), "GPUQ_REDIS_URL": url,
           "GPUQ_HUB_NAMESPACES": "alpha:alpha-org"}
    worker = start_worker(env, log_dir, "hubworker")
    try:
        wait_for(lambda: worker_alive(url, "hubworker@"), 90, "hub worker heartbeat")
        api, api_url = start_api(env, log_dir)
        try:
            with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60) as c:
                yield c, [worker, api], url
        finally:
            api.stop()
    finally:
        worker.stop()


def _values(r: redis.Redis, key: bytes) -> Any:
    kind = r.type(key).decode()
    if kind == "string":
        return [r.get(key)]
    if kind == "hash":
        return list(r.hgetall(key).items())
    if kind == "list":
        return r.lrange(key, 0, -1)
    if kind == "set":
        return list(r.smembers(key))
    if kind == "zset":
        return r.zrange(key, 0, -1)
    if kind == "stream":
        return r.xrange(key)
    return [kind]


def _redis_dump(url: str) -> str:
    """Every key of every database, every value (strings, hashes, lists, sets, zsets, streams), plus the
    decoded bodies of Celery messages (kombu stores them base64-encoded)."""
    base = url.rsplit("/", 1)[0]
    out: list[str] = []
    for db in range(16):
        r = redis.Redis.from_url(f"{base}/{db}")
        for key in r.scan_iter(count=1000):
            text = f"{key!r} {_values(r, key)!r}"
            out.append(text)
            out.extend(_message_bodies(text))
    return "\n".join(out)


def _message_bodies(text: str) -> list[str]:
    bodies = []
    for chunk in text.split('"body": "')[1:]:
        try:
            bodies.append(base64.b64decode(chunk.split('"', 1)[0]).decode(errors="replace"))
        except ValueError:
            pass
    return bodies


def _b64_forms(secret: str) -> list[str]:
    """Substrings the secret would show as inside any base64 text, whatever its alignment."""
    forms = []
    for pad in range(3):
        encoded = base64.b64encode(b"x" * pad + secret.encode()).decode()
        forms.append(encoded[4 * ((pad + 2) // 3) + 1:-3])
    return forms


def _assert_absent(secret: str, where: str, text: str) -> None:
    assert secret not in text, f"token found in {where}"
    for form in _b64_forms(secret):
        assert form not in text, f"base64 of the token found in {where}"


@pytest.fixture(scope="module")
def pushed(stack: tuple[httpx.Client, list[Service], str]) -> dict[str, Any]:
    """A fine-tune of the private Hub model on the private Hub dataset, pushed to alice's namespace.

    Redis is dumped while the job runs (its Celery message is then in flight) and after it ends."""
    client, _, url = stack
    job = submit(client, {"kind": "finetune", "model": BASE, "params": {
        "revision": "main", "hub_token": SECRET, "data": {"dataset": DATA, "eval_split": "test"}, "lora": LORA,
        "training": {"max_steps": 40, "learning_rate": 1e-2, "batch_size": 16, "log_every": 5},
        "push_to_hub": {"repo_id": OUT, "private": True, "token": SECRET}}})
    wait_status(client, job["id"], ("running", "succeeded", "failed"), timeout=120)
    during = _redis_dump(url)
    final = wait_status(client, job["id"], timeout=280)
    assert final["status"] == "succeeded", final
    return {"job": final, "during": during}


def test_private_model_and_dataset_are_pulled_with_the_job_token_and_pinned(
        hub: HubServer, pushed: dict[str, Any]) -> None:
    resolved = pushed["job"]["resolved"]
    assert resolved["model"] == {"repo_id": BASE, "repo_type": "model", "revision": "main", "sha": hub.head(BASE)}
    assert resolved["dataset"]["sha"] == hub.head(DATA, "dataset")
    assert pushed["job"]["result"]["rows"] == {"train": 160, "eval": 20}
    assert f"Bearer {SECRET}" in hub.seen_auth_headers


def test_push_downloads_back_identical_with_a_model_card(
        hub: HubServer, pushed: dict[str, Any], stack: tuple[httpx.Client, list[Service], str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import hf_hub_download

    point_hf_client_at(monkeypatch, hub, tmp_path / "hf")  # this process is offline (conftest) otherwise
    client, job = stack[0], pushed["job"]
    info = job["result"]["hub"]
    assert info["repo_id"] == OUT and info["commit_sha"] == hub.head(OUT) and OUT in info["commit_url"]
    files = hub.repo_files(OUT)
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "metrics.json",
            "tokenizer.json"} <= set(files)
    for name, artifact in (("adapter_model.safetensors", "adapter/adapter_model.safetensors"),
                           ("README.md", "README.md")):
        path = hf_hub_download(OUT, name, revision=info["commit_sha"], endpoint=hub.endpoint, token=SECRET,
                               cache_dir=tmp_path)
        assert Path(path).read_bytes() == client.get(f"/v1/jobs/{job['id']}/artifacts/{artifact}").content
    card = files["README.md"].decode()
    for expected in (f"base_model: {BASE}", DATA, hub.head(BASE), "learning_rate", "eval_loss"):
        assert expected in card
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == BASE


def test_inference_serves_the_pushed_adapter_from_the_hub(
        stack: tuple[httpx.Client, list[Service], str], models: dict[str, str], hub: HubServer) -> None:
    client = stack[0]
    params = {"task": "text-generation", "max_new_tokens": 4}
    body = {"kind": "inference", "model": models["gpt2"], "inputs": PROMPTS, "params": params}
    plain = run(client, body)
    tuned = run(client, {**body, "params": {**params, "adapter": {"repo": OUT, "token": SECRET}}})
    assert tuned["status"] == "succeeded", tuned
    assert tuned["result"] != plain["result"]
    assert all(r["generated_text"].startswith(" blue") for r in tuned["result"])
    assert tuned["resolved"]["adapter"]["sha"] == hub.head(OUT)
    assert tuned["timings"]["model_load_ms"] == 0


def test_job_token_appears_nowhere_in_redis_logs_or_artifacts(
        pushed: dict[str, Any], stack: tuple[httpx.Client, list[Service], str]) -> None:
    _, services, url = stack
    # The dump taken mid-run holds the job's Celery message (unacked, base64 body decoded): the scan sees it.
    assert pushed["job"]["id"] in "\n".join(_message_bodies(pushed["during"]))
    _assert_absent(SECRET, "Redis while the job ran", pushed["during"])
    _assert_absent(SECRET, "Redis after the job", _redis_dump(url))
    for svc in services:
        _assert_absent(SECRET, f"{svc.name} log", svc.log())
    job = pushed["job"]
    root = Path(SESSION_DIR / "artifacts" / job["tenant"] / job["id"])
    for path in root.rglob("*"):
        if path.is_file():
            _assert_absent(SECRET, f"artifact {path.name}", path.read_bytes().decode(errors="replace"))


def test_server_token_pushes_only_to_the_tenants_namespaces_and_auth_errors_are_clear(
        stack: tuple[httpx.Client, list[Service], str], models: dict[str, str]) -> None:
    from tests.support.datasets import upload

    client = stack[0]
    file_id = upload(client, completion_rows(16))
    params = {"data": {"file_id": file_id}, "lora": LORA, "training": {"max_steps": 1, "batch_size": 8}}
    refused = client.post("/v1/jobs", json={"kind": "finetune", "model": models["gpt2"],
                                            "params": {**params, "push_to_hub": {"repo_id": OUT}}})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "params.push_to_hub.repo_id"
    job = run(client, {"kind": "finetune", "model": models["gpt2"],
                       "params": {**params, "push_to_hub": {"repo_id": "alpha-org/model"}}}, timeout=180)
    assert job["status"] == "failed"
    assert job["error"]["type"] == "hub_auth_error" and "401" in job["error"]["message"]
