"""Tenant isolation against every reference a job can carry, on a deployment laid out as one data volume.

Every process runs in ``D`` (its working directory), the stores are relative to it and lie inside a model
root, as they naturally do when models, outputs and uploads share a volume::

    D/org/bert-sentiment     a model outside every root: "org/bert-sentiment" is also a Hub-shaped name
    D/var/                   model root (API only): holds both stores
    D/var/artifacts          GPUQ_ARTIFACT_DIR=var/artifacts (relative to D)
    D/var/files              the files store (its default, next to the artifacts)
    D/var/data/rows.csv      a data file under the API's roots but not under the worker's
    D/var/models/            model root (API and worker): bert-sentiment, and "escape", a symlink out

The worker's roots are narrower than the API's: what the API let through, the worker checks again.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import KEY_A, KEY_B
from tests.support.jobs import run, submit, wait_status
from tests.support.models import tiny
from tests.support.stack import MiniStack, worker_env

TEXTS = ["beta-secret-review-1", "beta-secret-review-2"]


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("volume")
    tiny(d / "var" / "models", "bert-sentiment")
    tiny(d / "org", "bert-sentiment")
    (d / "var" / "models" / "escape").symlink_to(d / "org" / "bert-sentiment")
    (d / "var" / "data").mkdir(parents=True)
    (d / "var" / "data" / "rows.csv").write_text("text\nfine\n")
    return d


@pytest.fixture(scope="module")
def stack(volume: Path, log_dir: Path) -> Iterator[MiniStack]:
    env = {**worker_env(), "GPUQ_ARTIFACT_DIR": "var/artifacts", "GPUQ_DATASET_ROOTS": "",
           "GPUQ_MODEL_ROOTS": os.pathsep.join([str(volume / "var" / "models"), str(volume / "var")])}
    env.pop("GPUQ_FILES_DIR", None)
    with MiniStack(env, log_dir, "references", cwd=volume) as s:
        s.worker("w1", GPUQ_MODEL_ROOTS=str(volume / "var" / "models"))
        yield s


@pytest.fixture(scope="module")
def alpha(stack: MiniStack) -> Iterator[httpx.Client]:
    with stack.client(KEY_A) as c:
        yield c


@pytest.fixture(scope="module")
def beta_data(stack: MiniStack) -> dict[str, str]:
    """What tenant beta has in the stores: an upload, and a finished job's parquet artifact."""
    with stack.client(KEY_B) as c:
        body = "".join(json.dumps({"text": t}) + "\n" for t in TEXTS).encode()
        upload = c.post("/v1/files", files={"file": ("private.jsonl", body)})
        assert upload.status_code == 201, upload.text
        job = run(c, _batch(_model(stack), {"file_id": upload.json()["id"]}))
        assert job["status"] == "succeeded", job
    return {"file": upload.json()["id"], "job": job["id"]}


def _model(stack: MiniStack) -> str:
    assert stack.cwd is not None
    return str(stack.cwd / "var" / "models" / "bert-sentiment")


def _batch(model: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "batch_inference", "model": model,
            "params": {"data": data, "inference": {"task": "text-classification"}}}


def _refused(client: httpx.Client, body: dict[str, Any], field: str) -> str:
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["field"] == field, error
    return str(error["message"])


@pytest.mark.parametrize(("name", "column"), [("var/files", "text"), ("var/artifacts", "output")])
def test_a_hub_dataset_id_never_loads_a_local_directory_of_that_name(alpha: httpx.Client, beta_data: dict[str, str],
                                                                      stack: MiniStack, name: str, column: str) -> None:
    job = run(alpha, _batch(_model(stack), {"dataset": name, "column": column}))
    assert job["status"] == "failed", job
    assert "HF cache" in job["error"]["message"]  # looked up on the (offline) Hub only
    assert "beta-secret" not in json.dumps(job)
    assert alpha.get(f"/v1/jobs/{job['id']}/artifacts").json() == []


def test_a_tokenizer_dataset_id_never_loads_the_files_store(alpha: httpx.Client, beta_data: dict[str, str]) -> None:
    job = run(alpha, {"kind": "tokenizer", "model": "tok", "params": {"algorithm": "bpe", "vocab_size": 64,
                                                                       "data": {"dataset": "var/files"}}})
    assert job["status"] == "failed" and "HF cache" in job["error"]["message"], job


def test_local_paths_into_the_stores_are_refused_though_a_root_holds_them(
        alpha: httpx.Client, beta_data: dict[str, str], stack: MiniStack, volume: Path) -> None:
    upload = volume / "var" / "files" / "beta" / beta_data["file"] / "data.jsonl"
    outputs = volume / "var" / "artifacts" / "beta" / beta_data["job"]
    assert upload.is_file() and (outputs / "outputs.parquet").is_file()
    for path in (str(upload), f"files/beta/{beta_data['file']}/data.jsonl",
                 f"./artifacts/beta/{beta_data['job']}/outputs.parquet"):
        assert "store" in _refused(alpha, _batch(_model(stack), {"path": path}), "params.data.path")
    adapter = outputs / "adapter"  # where a fine-tune of beta's would keep its adapter
    adapter.mkdir(exist_ok=True)
    (adapter / "adapter_config.json").write_text("{}")
    inference = {"kind": "inference", "model": _model(stack), "inputs": "x"}
    for ref, field in (({"path": str(adapter)}, "params.adapter.path"),
                       (f"artifacts/beta/{beta_data['job']}/adapter", "params.adapter.path")):
        _refused(alpha, {**inference, "params": {"task": "text-classification", "adapter": ref}}, field)
    _refused(alpha, {"kind": "image", "model": _model(stack),
                     "params": {"prompt": "x", "adapter": str(adapter)}}, "params.adapter.ref")
    _refused(alpha, {**inference, "model": str(outputs), "params": {"task": "text-classification"}}, "model")


def test_a_hub_shaped_name_never_loads_a_directory_relative_to_the_worker(alpha: httpx.Client,
                                                                            volume: Path) -> None:
    assert (volume / "org" / "bert-sentiment" / "config.json").is_file()  # in every process's cwd
    job = run(alpha, {"kind": "inference", "model": "org/bert-sentiment", "inputs": "good",
                      "params": {"task": "text-classification"}})
    assert job["status"] == "failed", job
    assert "HF cache" in job["error"]["message"] and job["result"] is None


def test_a_symlink_out_of_the_roots_is_refused(alpha: httpx.Client) -> None:
    body = {"kind": "inference", "model": "escape", "inputs": "x", "params": {"task": "text-classification"}}
    assert "outside GPUQ_MODEL_ROOTS" in _refused(alpha, body, "model")


def test_short_and_root_relative_names_resolve_under_the_roots(alpha: httpx.Client, volume: Path) -> None:
    expected = str((volume / "var" / "models" / "bert-sentiment").resolve())
    for name in ("bert-sentiment", "./bert-sentiment", "models/bert-sentiment"):
        job = run(alpha, {"kind": "inference", "model": name, "inputs": "good",
                          "params": {"task": "text-classification"}})
        assert job["status"] == "succeeded" and job["model"] == expected, (name, job)
    body = {"kind": "inference", "model": "var/models/bert-sentiment", "inputs": "x",
            "params": {"task": "text-classification"}}
    assert "did you mean 'bert-sentiment'?" in _refused(alpha, body, "model")


def test_the_worker_checks_references_again_under_its_own_roots(alpha: httpx.Client, stack: MiniStack) -> None:
    job = submit(alpha, _batch(_model(stack), {"path": "data/rows.csv"}))  # under the API's roots only
    done = wait_status(alpha, job["id"])
    assert done["status"] == "failed", done
    assert done["error"]["type"] == "invalid_input" and done["error"]["field"] == "params.data.path"


def test_a_tenant_reads_only_its_own_uploads(alpha: httpx.Client, beta_data: dict[str, str],
                                             stack: MiniStack) -> None:
    message = _refused(alpha, _batch(_model(stack), {"file_id": beta_data["file"]}), "params.data.file_id")
    assert "no uploaded file" in message
