"""The chat task, LoRA adapters beside their base in shared decode steps, and KV-cache admission, on the real
stack of tests/e2e/conftest.py (a 2 MiB KV budget per model)."""
from __future__ import annotations

import time

import httpx

from tests.support.generation import events, gen, run_group, texts
from tests.support.jobs import run

HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


def test_chat_renders_the_models_template_and_answers_as_the_assistant(gclient: httpx.Client,
                                                                       gen_models: dict[str, str]) -> None:
    model = gen_models["chat"]
    rec = run(gclient, gen(model, HELLO, task="chat", max_new_tokens=10))
    assert rec["status"] == "succeeded", rec
    answer = rec["result"]
    assert answer["message"] == {"role": "assistant", "content": answer["generated_text"]}
    rendered = "<|system|>be brief\n<|user|>hello there\n<|assistant|>"
    plain = run(gclient, gen(model, rendered, max_new_tokens=10))["result"]
    assert plain["generated_text"] == answer["generated_text"] and plain["usage"] == answer["usage"]
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]}]
    many = run(gclient, gen(model, [HELLO, parts], task="chat", max_new_tokens=6, stream=True))
    assert isinstance(many["result"], list) and len(many["result"]) == 2
    streamed = "".join(d["text"] for kind, d in events(gclient, many["id"]) if kind == "output" and d["index"] == 1)
    assert streamed == many["result"][1]["generated_text"]
    beams = run(gclient, gen(model, HELLO, task="chat", max_new_tokens=4, num_beams=2))  # the static path
    assert beams["result"]["message"]["role"] == "assistant"


def test_chat_errors_name_the_field(gclient: httpx.Client, gen_models: dict[str, str]) -> None:
    def error(body: dict[str, object]) -> dict[str, object]:
        resp = gclient.post("/v1/jobs", json=body)
        assert resp.status_code == 422, resp.text
        return resp.json()["error"]  # type: ignore[no-any-return]

    no_template = error(gen(gen_models["plain"], HELLO, task="chat"))
    assert no_template["field"] == "model" and "chat template" in str(no_template["message"])
    assert error(gen(gen_models["chat"], [{"role": "robot", "content": "hi"}], task="chat"))["field"] == \
        "inputs.0.role"
    assert error(gen(gen_models["chat"], [HELLO, [{"role": "user"}]], task="chat"))["field"] == "inputs.1.0.content"
    # A role gpuq knows but this model's template refuses: the worker names the conversation.
    refused = run(gclient, gen(gen_models["chat"], [{"role": "tool", "content": "42"}], task="chat"))
    assert refused["status"] == "failed" and refused["error"]["type"] == "invalid_input"
    assert refused["error"]["field"] == "inputs.0" and "unknown role tool" in refused["error"]["message"]


def test_adapter_requests_share_decode_steps_with_base_requests_on_one_resident_base(
        gclient: httpx.Client, gen_models: dict[str, str]) -> None:
    model, a, b = gen_models["chat"], {"path": gen_models["lora-a"]}, {"path": gen_models["lora-b"]}
    bodies = [gen(model, "the queue", max_new_tokens=40), gen(model, "the queue", max_new_tokens=40, adapter=a),
              gen(model, "the queue", max_new_tokens=30, adapter=b), gen(model, "a worker", max_new_tokens=50)]
    alone = [run(gclient, b) for b in bodies]
    assert all(r["status"] == "succeeded" for r in alone), alone
    base, tuned_a, tuned_b = (alone[i]["result"]["generated_text"] for i in range(3))
    assert len({base, tuned_a, tuned_b[:len(base)]}) == 3  # each adapter changes what the base writes
    together = run_group(gclient, bodies)
    assert [texts(r["result"]) for r in together] == [texts(r["result"]) for r in alone]
    assert all(r["timings"]["model_load_ms"] == 0 for r in together)  # the base was never reloaded
    assert min(r["batch"]["jobs"] for r in together[1:3]) > 1  # adapter rows shared steps with others
    logs = [d["message"] for kind, d in events(gclient, alone[1]["id"]) if kind == "log"]
    assert any("adapter loaded" in m for m in logs)


def test_a_request_larger_than_the_whole_kv_cache_fails_at_once(gclient: httpx.Client,
                                                                gen_models: dict[str, str]) -> None:
    begin = time.monotonic()
    rec = run(gclient, gen(gen_models["wide"], "the queue", max_new_tokens=300))
    assert rec["status"] == "failed" and rec["error"]["type"] == "resource_exhausted", rec
    assert "GPUQ_KV_CACHE_BUDGET" in rec["error"]["message"] and "256" in rec["error"]["message"]
    assert time.monotonic() - begin < 30


def test_a_request_that_cannot_get_cache_waits_for_capacity_then_runs(gclient: httpx.Client,
                                                                      gen_models: dict[str, str]) -> None:
    # Each needs 192 of the 256 positions the wide model's KV cache holds: one runs while the other waits
    # (one group message: the worker starts both at once).
    body = gen(gen_models["wide"], "the queue", max_new_tokens=180, min_new_tokens=180)
    records = run_group(gclient, [body, body])
    assert [r["status"] for r in records] == ["succeeded", "succeeded"], records
    states = [d.get("state") for r in records for kind, d in events(gclient, r["id"]) if kind == "progress"]
    assert "waiting_for_capacity" in states
    assert records[0]["result"] == records[1]["result"]
