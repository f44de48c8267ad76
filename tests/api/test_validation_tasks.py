"""Each inference task checks its own params and inputs at submit: 422 naming the field, nothing enqueued."""
from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.images import PNG_1PX

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def body(inputs: Any, **params: Any) -> dict[str, Any]:
    return {"kind": "inference", "model": MODEL, "inputs": inputs, "params": params}


CASES = [
    (body({"question": "q"}, task="question-answering"), "inputs.context"),
    (body({"question": "q", "context": "c", "extra": 1}, task="question-answering"), "inputs.extra"),
    (body([{"question": "q", "context": "c"}, {"question": " ", "context": "c"}], task="question-answering"),
     "inputs.1.question"),
    (body("just text", task="question-answering"), "inputs"),
    (body({"question": "q", "context": "c"}, task="question-answering", doc_stride=300), "params.doc_stride"),
    (body("x", task="zero-shot-classification"), "params.candidate_labels"),
    (body("x", task="zero-shot-classification", candidate_labels=[]), "params.candidate_labels"),
    (body("x", task="zero-shot-classification", candidate_labels=["a"], hypothesis_template="no slot"),
     "params.hypothesis_template"),
    (body("x", task="zero-shot-classification", candidate_labels=["a", "a"]), "params.candidate_labels"),
    (body("x", task="ner", aggregation_strategy="best"), "params.aggregation_strategy"),
    (body("x", task="fill-mask", top_k=0), "params.top_k"),
    (body("x", task="translation_en_to_de", tgt_lang="fr"), "params.tgt_lang"),
    (body("x", task="translation", src_lang="english!"), "params.src_lang"),
    (body("x", task="summarization", max_new_tokens=10**6), "params.max_new_tokens"),
    (body("x", task="summarization", min_new_tokens=50, max_new_tokens=10), "params.min_new_tokens"),
    (body("x", task="text-generation", stop=["a"] * 9), "params.stop"),
    (body("x", task="text-generation", stream=True, num_beams=3), "params.stream"),
    (body("x", task="text-generation", n=17), "params.n"),
    (body("x", task="text-generation", n=3, num_beams=2), "params.n"),
    (body("x", task="text-generation", logprobs=21), "params.logprobs"),
    (body("x", task="text-generation", logprobs=1, num_beams=2), "params.logprobs"),
    (body("x", task="chat"), "inputs"),
    (body([], task="chat"), "inputs"),
    (body([{"role": "user", "content": "hi"}, "hello"], task="chat"), "inputs.1"),
    (body([{"role": "bot", "content": "hi"}], task="chat"), "inputs.0.role"),
    (body([[{"role": "user", "content": "hi"}], [{"role": "user", "content": 5}]], task="chat"),
     "inputs.1.0.content"),
    (body([{"role": "user", "content": [{"type": "image_url", "url": "x"}]}], task="chat"), "inputs.0.content.0"),
    (body([{"role": "user", "content": "hi", "mood": "calm"}], task="chat"), "inputs.0.mood"),
    (body([{"role": "user", "content": "hi"}], task="chat", return_full_text=True), "params.return_full_text"),
    (body("not base64 at all!", task="image-classification"), "inputs"),
    (body(["aGVsbG8gd29ybGQ="], task="image-classification"), "inputs.0"),
    (body([PNG_1PX, 7], task="image-classification"), "inputs.1"),
    (body("x", task="image-classification", top_k=0), "params.top_k"),
]


@pytest.mark.parametrize(("payload", "field"), CASES, ids=[f"{p['params']['task']}:{f}" for p, f in CASES])
def test_bad_task_input_is_422_naming_the_field(client: httpx.Client, payload: dict[str, Any],
                                                field: str) -> None:
    resp = client.post("/v1/jobs", json=payload)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field, resp.json()


def test_good_inputs_of_every_shape_are_accepted(client: httpx.Client) -> None:
    for payload in (body({"question": "q", "context": "c"}, task="question-answering"),
                    body("x", task="zero-shot-classification", candidate_labels=["a", "b"], multi_label=True),
                    body([PNG_1PX, "data:image/png;base64," + PNG_1PX], task="image-classification"),
                    body("x [MASK]", task="fill-mask", targets=["a"]),
                    body("x", task="translation_en_to_ro"),
                    body("x", task="text-generation", stop="one stop", n=2, logprobs=0),
                    body([[{"role": "system", "content": "s"}, {"role": "user", "content": [
                        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]], task="chat")):
        resp = client.post("/v1/jobs", json=payload)
        assert resp.status_code == 202, resp.text
        client.post(f"/v1/jobs/{resp.json()['id']}/cancel")


def test_batch_inference_checks_its_data_source(client: httpx.Client) -> None:
    def submit(params: dict[str, Any], inputs: Any = None) -> httpx.Response:
        return client.post("/v1/jobs", json={"kind": "batch_inference", "model": MODEL, "inputs": inputs,
                                             "params": params})
    task = {"task": "feature-extraction"}
    assert submit({"data": {}, "inference": task}).json()["error"]["field"] == "params.data"
    def field(params: dict[str, Any], inputs: Any = None) -> str:
        return str(submit(params, inputs).json()["error"]["field"])
    assert field({"data": {"path": "/etc/passwd"}, "inference": task}) == "params.data.path"
    assert submit({"data": {"dataset": "a/b"}, "inference": {"task": "nope"}}).json()["error"]["field"] == \
        "params.inference.task"
    too_long = {"task": "text-generation", "max_new_tokens": 10**6}
    assert field({"data": {"dataset": "a/b"}, "inference": too_long}) == "params.inference.max_new_tokens"
    assert field({"data": {"dataset": "a/b"}, "inference": task}, inputs=["x"]) == "inputs"


def test_batch_inference_checks_an_uploaded_data_file(client: httpx.Client, client_b: httpx.Client) -> None:
    from tests.support.datasets import sentiment_rows, upload

    mine, theirs = upload(client, sentiment_rows(5)), upload(client_b, sentiment_rows(5))
    task = {"task": "text-classification"}

    def field(data: dict[str, Any]) -> str:
        resp = client.post("/v1/jobs", json={"kind": "batch_inference", "model": MODEL,
                                             "params": {"data": data, "inference": task}})
        assert resp.status_code == 422, resp.text
        return str(resp.json()["error"]["field"])
    assert field({"file_id": theirs}) == "params.data.file_id"
    assert field({"file_id": mine, "column": "nope"}) == "params.data.column"
    assert field({"file_id": mine, "dataset": "a/b"}) == "params.data"
    ok = client.post("/v1/jobs", json={"kind": "batch_inference", "model": MODEL,
                                       "params": {"data": {"file_id": mine, "column": "sentence"},
                                                  "inference": task}})
    assert ok.status_code == 202, ok.text
    client.post(f"/v1/jobs/{ok.json()['id']}/cancel")
