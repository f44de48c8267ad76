"""``GET /v1/models``: the model catalog through the real API, in OpenAI's model-list shape."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
from gpuq.common.catalog import fine_tune_id, parse_fine_tune_id

from tests.support.datasets import completion_rows, upload
from tests.support.jobs import run
from tests.support.processes import wait_for


def _models(client: httpx.Client) -> dict[str, dict[str, Any]]:
    resp = client.get("/v1/models")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list"
    return {m["id"]: m for m in body["data"]}


def test_models_under_the_roots_are_listed_by_short_name_in_openais_shape(
        client: httpx.Client, models: dict[str, str]) -> None:
    listed = _models(client)
    gpt2, sentiment = listed["gpt2"], listed["bert-sentiment"]
    for entry in (gpt2, sentiment):
        assert entry["object"] == "model" and isinstance(entry["created"], int) and entry["owned_by"]
        assert entry["source"] == "root" and entry["size_bytes"] > 0
    assert gpt2["path"] == models["gpt2"] and "text-generation" in gpt2["tasks"]
    assert "text-classification" in sentiment["tasks"]
    # The packaged all-MiniLM-L6-v2 is a root of its own here: named by its path.
    assert "feature-extraction" in listed[models["minilm"]]["tasks"]


def test_a_model_a_worker_holds_lists_that_worker(client: httpx.Client, models: dict[str, str]) -> None:
    job = run(client, {"kind": "inference", "model": models["sentiment"], "inputs": "fine",
                       "params": {"task": "text-classification"}})
    assert job["status"] == "succeeded", job
    node = job["worker"].rpartition(":")[0]  # the record names node:pid
    wait_for(lambda: node in _models(client)["bert-sentiment"]["resident_on"], 30, f"{node} in resident_on")


def test_one_model_by_id_and_an_unknown_one_is_404(client: httpx.Client) -> None:
    got = client.get("/v1/models/gpt2")
    assert got.status_code == 200 and got.json()["id"] == "gpt2"
    missing = client.get("/v1/models/no-such/model")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found" and missing.json()["error"]["field"] == "model"


def test_cached_hub_models_are_listed_with_their_snapshot(client: httpx.Client) -> None:
    snapshot = Path(os.environ["HF_HOME"]) / "hub" / "models--tiny-org--cached-bert" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    wait_for(lambda: "tiny-org/cached-bert" in _models(client), 15, "cached model listed")
    entry = _models(client)["tiny-org/cached-bert"]
    assert entry["source"] == "cache" and entry["owned_by"] == "tiny-org" and entry["path"] == str(snapshot)
    assert entry["tasks"] == ["fill-mask", "feature-extraction"]


def test_finished_fine_tunes_are_adapter_models_of_their_tenant_only(
        client: httpx.Client, client_b: httpx.Client, models: dict[str, str]) -> None:
    file_id = upload(client, completion_rows(16), "csv")
    job = run(client, {"kind": "finetune", "model": models["gpt2"], "params": {
        "data": {"file_id": file_id}, "lora": {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"},
        "training": {"max_steps": 2, "batch_size": 8}}}, timeout=240)
    assert job["status"] == "succeeded", job
    model_id = f"ft:gpt2:alpha:{job['id']}"
    entry = _models(client)[model_id]
    assert entry["source"] == "fine-tune" and entry["kind"] == "adapter" and entry["parent"] == "gpt2"
    assert entry["owned_by"] == "alpha" and entry["job_id"] == job["id"] and entry["tasks"] == ["text-generation"]
    assert client.get(f"/v1/models/{model_id}").json()["id"] == model_id
    assert model_id not in _models(client_b)
    assert client_b.get(f"/v1/models/{model_id}").status_code == 404


def test_fine_tune_ids_round_trip_even_when_the_base_holds_colons() -> None:
    assert parse_fine_tune_id(fine_tune_id("org/base", "alpha", "j1")) == ("org/base", "alpha", "j1")
    assert parse_fine_tune_id(fine_tune_id("C:/models/x", "t", "j")) == ("C:/models/x", "t", "j")
    assert parse_fine_tune_id("gpt2") is None and parse_fine_tune_id("ft:only") is None
