"""/v1/files, /v1/models and the Batch API through the official openai SDK (and gpuq's own client)."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import openai
import pytest

from gpuq.client import Client
from tests.conftest import KEY_A
from tests.support.jobs import submit
from tests.support.openai_sdk import async_client


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _chat_line(custom_id: str, model: str, **extra: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": custom_id}], "max_tokens": 4,
                     "temperature": 0, **extra}}


def _finished(oai: openai.OpenAI, batch_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = oai.batches.retrieve(batch_id)
        if batch.status in ("completed", "cancelled", "failed"):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} stuck in {batch.status}")


def test_files_round_trip_through_both_clients(oai: openai.OpenAI, oai_b: openai.OpenAI, api_url: str) -> None:
    content = _jsonl([{"prompt": "a", "completion": "b"}] * 3)
    created = oai.files.create(file=("rows.jsonl", content), purpose="fine-tune")
    assert created.object == "file" and created.purpose == "fine-tune" and created.bytes == len(content)
    assert oai.files.retrieve(created.id).filename == "rows.jsonl"
    assert created.id in [f.id for f in oai.files.list(purpose="fine-tune")]
    assert oai.files.content(created.id).read() == content
    with Client(api_url, api_key=KEY_A) as native:
        mine = next(f for f in native.list_files() if f["id"] == created.id)
        assert (mine["format"], mine["rows"], mine["columns"]) == ("jsonl", 3, ["prompt", "completion"])
    for call in (oai_b.files.retrieve, oai_b.files.content, oai_b.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(created.id)
    assert oai.files.delete(created.id).deleted
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(created.id)


def test_a_batch_file_that_is_not_batch_requests_is_refused_at_upload(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        oai.files.create(file=("b.jsonl", _jsonl([{"method": "POST", "url": "/v1/embeddings", "body": {}}])),
                         purpose="batch")
    assert caught.value.param == "file" and "line 1" in caught.value.message  # type: ignore[attr-defined]


def test_models_list_the_catalog_for_both_clients(oai: openai.OpenAI, api_url: str, model: str,
                                                  models: dict[str, str]) -> None:
    oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    ids = [m.id for m in oai.models.list()]
    assert model in ids and "gpt2" in ids and models["minilm"] in ids
    assert oai.models.retrieve(model).owned_by == "gpuq"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-model")
    listed = {m["id"]: m for m in httpx.get(f"{api_url}/v1/models", headers={"Authorization": f"Bearer {KEY_A}"}
                                            ).json()["data"]}
    assert listed[model]["source"] == "root" and listed[model]["path"].endswith(model)
    assert listed[model]["resident_on"]  # resident on the session's worker since the call above


def test_chat_batch_writes_output_and_error_files_as_openai_does(oai: openai.OpenAI, oai_b: openai.OpenAI,
                                                                client: httpx.Client, model: str) -> None:
    lines = [_chat_line("one", model), _chat_line("two", model, n=2), _chat_line("bad", model, temperature=9)]
    upload = oai.files.create(file=("batch.jsonl", _jsonl(lines)), purpose="batch")
    batch = oai.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                               metadata={"run": "test"})
    assert batch.object == "batch" and batch.status in ("in_progress", "finalizing", "completed")
    done = _finished(oai, batch.id)
    assert done.status == "completed" and done.metadata == {"run": "test"}
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 2, 1)
    out = [json.loads(x) for x in oai.files.content(done.output_file_id or "").text.splitlines()]
    assert [x["custom_id"] for x in out] == ["one", "two"] and all(x["error"] is None for x in out)
    assert out[0]["response"]["status_code"] == 200 and out[0]["response"]["body"]["object"] == "chat.completion"
    assert len(out[1]["response"]["body"]["choices"]) == 2
    job = client.get(f"/v1/jobs/{out[0]['response']['request_id']}").json()
    assert job["status"] == "succeeded" and job["params"]["task"] == "chat"
    errors = [json.loads(x) for x in oai.files.content(done.error_file_id or "").text.splitlines()]
    assert [e["custom_id"] for e in errors] == ["bad"]
    assert errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["error"]["param"] == "temperature"
    assert batch.id in [b.id for b in oai.batches.list()]
    with pytest.raises(openai.NotFoundError):
        oai_b.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        oai_b.files.content(done.output_file_id or "")


def test_embeddings_batch_runs_through_the_bulk_path(oai: openai.OpenAI, models: dict[str, str]) -> None:
    lines = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": models["minilm"], "input": text}} for i, text in enumerate(["a fox", "a dog"])]
    upload = oai.files.create(file=("emb.jsonl", _jsonl(lines)), purpose="batch")
    done = _finished(oai, oai.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings",
                                             completion_window="24h").id)
    out = [json.loads(x) for x in oai.files.content(done.output_file_id or "").text.splitlines()]
    assert [len(x["response"]["body"]["data"][0]["embedding"]) for x in out] == [384, 384]
    assert done.error_file_id is None


def test_cancelled_batch_stops_its_jobs(oai: openai.OpenAI, client: httpx.Client, model: str) -> None:
    blocker = submit(client, {"kind": "synthetic", "model": "none", "params": {"steps": 30, "step_ms": 100}})
    try:
        upload = oai.files.create(file=("c.jsonl", _jsonl([_chat_line(f"c{i}", model) for i in range(3)])),
                                  purpose="batch")
        batch = oai.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")
        assert oai.batches.cancel(batch.id).status in ("cancelling", "cancelled")
        done = _finished(oai, batch.id)
    finally:
        client.post(f"/v1/jobs/{blocker['id']}/cancel")
    assert done.status == "cancelled" and done.cancelled_at and done.output_file_id is None
    errors = [json.loads(x) for x in oai.files.content(done.error_file_id or "").text.splitlines()]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError):
        oai.batches.cancel(batch.id)


def test_async_client_drives_files_models_batches_and_fine_tuning(api_url: str, model: str) -> None:
    async def scenario() -> tuple[str, list[str], list[str]]:
        async with async_client(api_url, KEY_A) as aoai:
            upload = await aoai.files.create(file=("a.jsonl", _jsonl([_chat_line("a1", model)])), purpose="batch")
            batch = await aoai.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                              completion_window="24h")
            while batch.status not in ("completed", "cancelled", "failed"):
                await asyncio.sleep(0.2)
                batch = await aoai.batches.retrieve(batch.id)
            output = await aoai.files.content(batch.output_file_id or "")
            models = [m.id async for m in aoai.models.list()]
            tunes = [j.id async for j in aoai.fine_tuning.jobs.list()]
            return batch.status, [json.loads(x)["custom_id"] for x in output.text.splitlines()], models + tunes

    status, custom_ids, listed = asyncio.run(scenario())
    assert status == "completed" and custom_ids == ["a1"] and model in listed
