"""The files API: uploads are parsed, hashed, size-limited and private to their tenant; jobs check references."""
from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
import pytest

from tests.support.datasets import completion_rows, encode, sentiment_rows, upload
from tests.support.images import PNG_1PX


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_upload_describes_the_file_and_lists_it(client: httpx.Client, fmt: str) -> None:
    body = encode(sentiment_rows(40), fmt)
    resp = client.post("/v1/files", files={"file": (f"toy.{fmt}", body)})
    assert resp.status_code == 201, resp.text
    info = resp.json()
    assert info["id"].startswith("file-") and resp.headers["Location"] == f"/v1/files/{info['id']}"
    assert (info["name"], info["format"], info["size"], info["rows"]) == (f"toy.{fmt}", fmt, len(body), 40)
    assert info["sha256"] == hashlib.sha256(body).hexdigest()
    assert info["columns"] == ["sentence", "y"]
    assert client.get(f"/v1/files/{info['id']}").json() == info
    assert info["id"] in [f["id"] for f in client.get("/v1/files").json()["data"]]


def test_declared_format_wins_over_the_extension(client: httpx.Client) -> None:
    resp = client.post("/v1/files", files={"file": ("rows.txt", encode(sentiment_rows(5), "jsonl"))},
                       data={"format": "jsonl"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["format"] == "jsonl"


def test_another_tenants_file_is_not_found_and_not_listed(client: httpx.Client, client_b: httpx.Client) -> None:
    file_id = upload(client, sentiment_rows(10))
    assert client_b.get(f"/v1/files/{file_id}").status_code == 404
    assert file_id not in [f["id"] for f in client_b.get("/v1/files").json()["data"]]
    assert client.get("/v1/files/file-nope").status_code == 404


@pytest.mark.parametrize(("name", "content", "field"), [
    ("notes.txt", b"hello", "file"),
    ("bad.jsonl", b'{"a": 1}\nnot json\n', "file"),
    ("list.jsonl", b"[1, 2]\n", "file"),
    ("bad.parquet", b"PAR1 certainly not parquet", "file"),
    ("empty.csv", b"", "file"),
])
def test_unreadable_or_unknown_format_is_422(client: httpx.Client, name: str, content: bytes, field: str) -> None:
    resp = client.post("/v1/files", files={"file": (name, content)})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field


def test_missing_file_field_is_422(client: httpx.Client) -> None:
    resp = client.post("/v1/files", data={"format": "csv"})
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "file"


def test_upload_over_the_size_limit_is_413_and_leaves_nothing(client: httpx.Client) -> None:
    before = len(client.get("/v1/files").json()["data"])
    big = encode([{"text": "x" * 1000} for _ in range(1100)], "jsonl")  # ~1.1 MB > GPUQ_MAX_UPLOAD_BYTES
    resp = client.post("/v1/files", files={"file": ("big.jsonl", big)})
    assert resp.status_code == 413
    assert resp.json()["error"]["type"] == "payload_too_large"
    assert len(client.get("/v1/files").json()["data"]) == before


def test_uploads_are_not_bound_by_the_json_body_limit(client: httpx.Client) -> None:
    rows = [{"text": "y" * 500} for _ in range(600)]  # ~300 kB: over GPUQ_MAX_BODY_BYTES, under the upload limit
    assert len(encode(rows, "jsonl")) > 200_000
    upload(client, rows)


def _finetune(params: dict[str, Any], model: str) -> dict[str, Any]:
    return {"kind": "finetune", "model": model, "params": params}


def test_finetune_data_references_are_checked_at_submit(client: httpx.Client, client_b: httpx.Client,
                                                        models: dict[str, str]) -> None:
    mine = upload(client, completion_rows(10))
    cases = [
        ({"data": {"file_id": "file-" + "0" * 32}}, "params.data.file_id"),
        ({"data": {"file_id": upload(client_b, completion_rows(5))}}, "params.data.file_id"),
        ({"data": {"file_id": mine, "columns": {"prompt": "question"}}}, "params.data.columns"),
        ({"data": {"file_id": mine}, "task_type": "sequence-classification"}, "params.data.columns"),
        ({"data": {"file_id": mine, "dataset": "org/data"}}, "params.data"),
        ({"data": {"file_id": mine}, "trainer": "dpo"}, "params.data.columns"),
        ({"data": {"file_id": mine}, "trainer": "dpo", "task_type": "sequence-classification"}, "params"),
        ({"data": {"file_id": mine}, "lora": {"r": 0}}, "params.lora.r"),
        ({"data": {"file_id": mine}, "push_to_hub": {"repo_id": "someone/else"}}, "params.push_to_hub.repo_id"),
    ]
    for params, field in cases:
        resp = client.post("/v1/jobs", json=_finetune(params, models["gpt2"]))
        assert resp.status_code == 422, (params, resp.text)
        assert resp.json()["error"]["field"] == field, (params, resp.json())


def test_adapter_of_another_tenants_job_is_refused(client: httpx.Client, client_b: httpx.Client,
                                                   models: dict[str, str]) -> None:
    foreign = client_b.post("/v1/jobs", json={"kind": "synthetic", "model": "x", "params": {}}).json()["id"]
    for ref in ({"job": foreign}, {"job": "0" * 32}):
        resp = client.post("/v1/jobs", json={"kind": "inference", "model": models["gpt2"], "inputs": "hi",
                                             "params": {"task": "text-generation", "adapter": ref}})
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["field"] == "params.adapter.job"
    resp = client.post("/v1/jobs", json={"kind": "inference", "model": models["gpt2"], "inputs": "hi",
                                         "params": {"task": "text-generation", "adapter": "/etc"}})
    assert resp.json()["error"]["field"] == "params.adapter.path"


def test_tokenizer_and_evaluate_kinds_validate_their_params(client: httpx.Client, models: dict[str, str]) -> None:
    corpus = upload(client, [{"body": "a b c"}] * 5)
    cases = [
        ({"kind": "tokenizer", "model": "tok", "params": {"algorithm": "sentencepiece",
                                                          "data": {"file_id": corpus}}}, "params.algorithm"),
        ({"kind": "tokenizer", "model": "tok", "params": {"algorithm": "bpe", "data": {"file_id": corpus}}},
         "params.data.columns"),
        ({"kind": "evaluate", "model": models["sentiment"], "params": {
            "task_type": "sequence-classification", "metrics": ["bleu"], "data": {"file_id": corpus}}},
         "params.metrics"),
    ]
    for body, field in cases:
        resp = client.post("/v1/jobs", json=body)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["field"] == field, resp.json()


def upload_image(client: httpx.Client, name: str = "pixel.png",
                 content: bytes | None = None) -> httpx.Response:
    data = base64.b64decode(PNG_1PX) if content is None else content
    return client.post("/v1/files", files={"file": (name, data)})


def test_images_upload_as_format_image_and_a_fake_one_is_422(client: httpx.Client) -> None:
    resp = upload_image(client)
    assert resp.status_code == 201, resp.text
    assert resp.json()["format"] == "image" and resp.json()["rows"] == 1
    fake = upload_image(client, "fake.png", b"GIF? no, plain text")
    assert fake.status_code == 422 and fake.json()["error"]["field"] == "file"


def test_image_inputs_by_file_id_are_checked_at_submit(client: httpx.Client, client_b: httpx.Client) -> None:
    image, data = upload_image(client).json()["id"], upload(client, sentiment_rows(5))
    theirs = upload_image(client_b).json()["id"]
    model = "sentence-transformers/all-MiniLM-L6-v2"

    def submit(inputs: Any) -> httpx.Response:
        return client.post("/v1/jobs", json={"kind": "inference", "model": model, "inputs": inputs,
                                             "params": {"task": "image-classification"}})
    cases = [([{"file_id": theirs}], "inputs.0.file_id"), ({"file_id": "file-" + "0" * 32}, "inputs.file_id"),
             ([{"file_id": image}, {"file_id": data}], "inputs.1.file_id"),
             ([{"file_id": image, "crop": 1}], "inputs.0.crop"), ([{"file_id": 5}], "inputs.0.file_id")]
    for inputs, field in cases:
        resp = submit(inputs)
        assert resp.status_code == 422, (inputs, resp.text)
        assert resp.json()["error"]["field"] == field, (inputs, resp.json())
    ok = submit([{"file_id": image}])
    assert ok.status_code == 202, ok.text
    client.post(f"/v1/jobs/{ok.json()['id']}/cancel")


def test_data_references_refuse_an_image_upload(client: httpx.Client, models: dict[str, str]) -> None:
    image = upload_image(client).json()["id"]
    resp = client.post("/v1/jobs", json=_finetune({"data": {"file_id": image}}, models["gpt2"]))
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "params.data.file_id", resp.text
    assert "an image" in resp.json()["error"]["message"]
