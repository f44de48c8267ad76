"""Every inference task end to end on tiny real models: HTTP -> Redis -> worker -> resident model."""
from __future__ import annotations

import base64
import io
import math
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL_ROOT
from tests.support.jobs import run, sse_events
from tests.support.models import tiny


@pytest.fixture(scope="module")
def m() -> dict[str, str]:
    names = ("bert-ner", "bert-qa", "bert-mlm", "bert-nli", "t5", "vit", "gpt2")
    return {name: tiny(MODEL_ROOT, name) for name in names}


def job(client: httpx.Client, model: str, inputs: Any, **params: Any) -> dict[str, Any]:
    record = run(client, {"kind": "inference", "model": model, "inputs": inputs, "params": params})
    assert record["status"] == "succeeded", record
    return record


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_ner_groups_tokens_into_labelled_spans(client: httpx.Client, m: dict[str, str]) -> None:
    text = "Alice visits Paris"
    rec = job(client, m["bert-ner"], [text], task="ner", aggregation_strategy="simple", ignore_labels=[])
    spans = rec["result"][0]
    assert spans and {s["entity_group"] for s in spans} <= {"O", "PER", "LOC"}
    for s in spans:
        assert 0 <= s["start"] < s["end"] <= len(text) and 0 <= s["score"] <= 1
    raw = job(client, m["bert-ner"], text, task="token-classification", aggregation_strategy="none",
              ignore_labels=[])["result"]
    assert {t["entity"] for t in raw} <= {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}


def test_question_answering_returns_a_span_of_the_context(client: httpx.Client, m: dict[str, str]) -> None:
    qa = {"question": "Where does Alice live?", "context": "Alice lives in Paris with a cat named Tom."}
    one = job(client, m["bert-qa"], qa, task="question-answering")["result"]
    assert qa["context"][one["start"]:one["end"]] == one["answer"] and one["answer"]
    top = job(client, m["bert-qa"], [qa, qa], task="question-answering", top_k=3, max_answer_len=4)["result"]
    assert len(top) == 2 and len(top[0]) == 3
    assert [a["score"] for a in top[0]] == sorted((a["score"] for a in top[0]), reverse=True)
    assert all(len(a["answer"].split()) <= 4 for a in top[0])
    # A two-word context with one-token answers has few spans, so with room for 20 the "no answer" shows up.
    short = {"question": "Where?", "context": "in Paris"}
    impossible = job(client, m["bert-qa"], short, task="question-answering", top_k=20, max_answer_len=1,
                     handle_impossible_answer=True)["result"]
    assert any(a["answer"] == "" for a in impossible) and any(a["answer"] for a in impossible)


def test_long_context_is_read_in_overlapping_windows(client: httpx.Client, m: dict[str, str]) -> None:
    context = " ".join(["the queue runs jobs on workers"] * 60) + " Alice lives in Paris."
    rec = job(client, m["bert-qa"], {"question": "Where?", "context": context}, task="question-answering",
              max_seq_len=64, doc_stride=16)
    assert context[rec["result"]["start"]:rec["result"]["end"]] == rec["result"]["answer"]


def test_summarization_translation_and_text2text_use_the_seq2seq_model(client: httpx.Client,
                                                                       m: dict[str, str]) -> None:
    s = job(client, m["t5"], ["the queue runs jobs on many workers all day"], task="summarization",
            max_new_tokens=6)
    assert isinstance(s["result"][0]["summary_text"], str)
    t = job(client, m["t5"], "hello world", task="translation_en_to_de", max_new_tokens=6, num_beams=2)
    assert t["params"]["src_lang"] == "en" and t["params"]["tgt_lang"] == "de"
    assert isinstance(t["result"]["translation_text"], str)
    again = job(client, m["t5"], "hello world", task="translation", src_lang="en", tgt_lang="de",
                max_new_tokens=6, num_beams=2)
    assert again["result"] == t["result"]  # the two spellings are the same job
    g = job(client, m["t5"], ["question: what runs? context: jobs run"], task="text2text-generation",
            max_new_tokens=4)
    assert isinstance(g["result"][0]["generated_text"], str)


def test_zero_shot_scores_every_candidate_label(client: httpx.Client, m: dict[str, str]) -> None:
    labels = ["sports", "politics", "cooking"]
    single = job(client, m["bert-nli"], "a match tonight", task="zero-shot-classification",
                 candidate_labels=labels)["result"]
    assert sorted(single["labels"]) == sorted(labels)
    assert math.isclose(sum(single["scores"]), 1.0, rel_tol=1e-4)
    multi = job(client, m["bert-nli"], ["a match tonight"], task="zero-shot-classification",
                candidate_labels=labels, multi_label=True,
                hypothesis_template="This text is about {}.")["result"][0]
    assert all(0 <= s <= 1 for s in multi["scores"]) and not math.isclose(sum(multi["scores"]), 1.0)


def test_fill_mask_ranks_tokens_and_honours_targets(client: httpx.Client, m: dict[str, str]) -> None:
    top = job(client, m["bert-mlm"], "the [MASK] runs jobs", task="fill-mask", top_k=4)["result"]
    assert len(top) == 4 and all("[MASK]" not in t["sequence"] for t in top)
    assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
    two = job(client, m["bert-mlm"], ["a [MASK] and a [MASK]"], task="fill-mask", top_k=2,
              targets=["queue", "worker"])["result"][0]
    assert len(two) == 2 and all(len(per_mask) == 2 for per_mask in two)


def test_fill_mask_without_a_mask_fails_that_job_naming_the_input(client: httpx.Client,
                                                                  m: dict[str, str]) -> None:
    rec = run(client, {"kind": "inference", "model": m["bert-mlm"], "inputs": ["has [MASK]", "has none"],
                       "params": {"task": "fill-mask"}})
    assert rec["status"] == "failed"
    assert rec["error"]["type"] == "invalid_input" and rec["error"]["field"] == "inputs.1"


def test_image_classification_takes_base64_images(client: httpx.Client, m: dict[str, str]) -> None:
    rec = job(client, m["vit"], [png((250, 0, 0)), "data:image/png;base64," + png((0, 0, 250), (64, 64))],
              task="image-classification", top_k=2)
    assert [len(r) for r in rec["result"]] == [2, 2]
    assert {r["label"] for row in rec["result"] for r in row} <= {"cat", "dog", "bird", "fish"}


def test_image_classification_takes_uploaded_images(client: httpx.Client, m: dict[str, str]) -> None:
    encoded = png((10, 200, 30), (48, 48))
    upload = client.post("/v1/files", files={"file": ("leaf.png", base64.b64decode(encoded))})
    assert upload.status_code == 201, upload.text
    by_file = job(client, m["vit"], [{"file_id": upload.json()["id"]}, encoded], task="image-classification")
    assert by_file["result"][0] == by_file["result"][1]  # the same picture, uploaded or inline


def test_text_generation_stops_at_a_stop_string(client: httpx.Client, m: dict[str, str]) -> None:
    free = job(client, m["gpt2"], "the worker", task="text-generation",
               max_new_tokens=12)["result"]["generated_text"]
    stop = next((free[i:i + 2] for i in range(2, len(free) - 2) if free[i:i + 2].strip()), None)
    if stop is None:
        pytest.skip("the tiny model generated nothing to stop on")
    cut = job(client, m["gpt2"], "the worker", task="text-generation", max_new_tokens=12,
              stop=[stop])["result"]["generated_text"]
    assert cut == free[:free.index(stop)]


def test_streamed_tokens_arrive_as_output_events_and_add_up_to_the_result(client: httpx.Client,
                                                                         m: dict[str, str]) -> None:
    rec = job(client, m["gpt2"], ["the queue", "a worker"], task="text-generation", max_new_tokens=10,
              stream=True)
    events = sse_events(client, rec["id"])
    outputs = [e["data"] for e in events if e["event"] == "output"]
    assert outputs, [e["event"] for e in events]
    types = [e["event"] for e in events]
    assert types.index("started") < types.index("output") < types.index("completed")
    for i, result in enumerate(rec["result"]):
        assert "".join(o["text"] for o in outputs if o["index"] == i) == result["generated_text"]


def test_streaming_with_beam_search_is_refused(client: httpx.Client, m: dict[str, str]) -> None:
    params = {"task": "text-generation", "stream": True, "num_beams": 2}
    body = {"kind": "inference", "model": m["gpt2"], "inputs": "x", "params": params}
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "params.stream"


def test_record_says_how_the_job_was_batched(client: httpx.Client, m: dict[str, str]) -> None:
    rec = job(client, m["bert-nli"], ["one", "two", "three"], task="text-classification", batch_size=2)
    assert rec["batch"]["passes"] == 2 and rec["batch"]["jobs"] >= 1 and rec["batch"]["inputs"] >= 2


def test_prefer_wait_returns_the_finished_record(client: httpx.Client, m: dict[str, str]) -> None:
    body = {"kind": "inference", "model": m["bert-nli"], "inputs": "quick",
            "params": {"task": "text-classification"}}
    resp = client.post("/v1/jobs", json=body, headers={"Prefer": "wait=60"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "succeeded" and resp.json()["result"]
    assert resp.headers["Preference-Applied"] == "wait=60"
    slow_body = {"kind": "synthetic", "model": "none", "params": {"steps": 10, "step_ms": 100}}
    slow = client.post("/v1/jobs", json=slow_body, headers={"Prefer": "wait=0.2"})
    assert slow.status_code == 202 and slow.json()["status"] in ("queued", "running")
