"""Fine-tune, tokenizer and evaluate jobs end to end: HTTP -> Redis -> real worker -> real (tiny) models."""
from __future__ import annotations

import json
import signal
from typing import Any

import httpx
import psutil
import pytest

from tests.support.datasets import (
    PROMPTS,
    completion_rows,
    corpus_rows,
    preference_rows,
    sentiment_rows,
    upload,
)
from tests.support.jobs import run, sse_events, submit, wait_status
from tests.support.processes import Service, wait_for

LORA = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}
GEN = {"task": "text-generation", "max_new_tokens": 4}


def _finetune(model: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "finetune", "model": model, "params": params}


def _names(job: dict[str, Any]) -> set[str]:
    return {a["name"] for a in job["artifacts"]}


def _artifact(client: httpx.Client, job_id: str, name: str) -> bytes:
    resp = client.get(f"/v1/jobs/{job_id}/artifacts/{name}")
    assert resp.status_code == 200, resp.text
    return resp.content


@pytest.fixture(scope="module")
def lm_adapter(api_url: str, models: dict[str, str]) -> dict[str, Any]:
    """One finished LoRA SFT of the tiny GPT-2 on prompt -> ' blue and calm' (shared by the serving tests)."""
    from tests.conftest import KEY_A

    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60) as client:
        file_id = upload(client, completion_rows(200), "csv")
        job = run(client, _finetune(models["gpt2"], {
            "data": {"file_id": file_id}, "lora": LORA, "merge": True,
            "training": {"max_steps": 40, "learning_rate": 1e-2, "batch_size": 16, "log_every": 5,
                         "eval_every": 20}}), timeout=280)
    assert job["status"] == "succeeded", job
    return job


def test_lora_classifier_eval_accuracy_rises_above_chance(client: httpx.Client, models: dict[str, str]) -> None:
    file_id = upload(client, sentiment_rows(300))
    job = run(client, _finetune(models["sentiment"], {
        "task_type": "sequence-classification",
        "data": {"file_id": file_id, "columns": {"text": "sentence", "label": "y"}},
        "lora": {"r": 16, "target_modules": "all-linear"},
        "training": {"epochs": 3, "learning_rate": 1e-2, "batch_size": 16, "eval_every": 17, "log_every": 5}}),
        timeout=280)
    assert job["status"] == "succeeded", job
    metrics = job["result"]["metrics"]
    assert metrics["initial"]["eval_accuracy"] <= 0.6  # chance on a balanced binary task
    assert metrics["eval_accuracy"] >= 0.8 and metrics["eval_f1"] >= 0.8
    assert job["result"]["labels"] == ["NEGATIVE", "POSITIVE"] and job["result"]["resumed_from_step"] == 0
    progress = [e["data"] for e in sse_events(client, job["id"]) if e["event"] == "progress"]
    steps = [p for p in progress if "loss" in p]
    assert steps[-1]["done"] == steps[-1]["total"] == job["result"]["steps"]
    assert all({"loss", "lr", "eta_s", "epoch"} <= set(p) for p in steps)
    assert any("eval_accuracy" in p.get("eval", {}) for p in progress[1:-1])  # eval every 17 steps, mid-run
    names = _names(job)
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "tokenizer/tokenizer.json",
            "metrics.json", "training_log.jsonl", "README.md"} <= names
    assert not [n for n in names if n.startswith("checkpoints/")]  # resume state is dropped once finished
    assert json.loads(_artifact(client, job["id"], "metrics.json"))["eval_accuracy"] == metrics["eval_accuracy"]
    log = [json.loads(line) for line in _artifact(client, job["id"], "training_log.jsonl").splitlines()]
    assert log[0]["step"] == 0 and log[-1]["step"] == job["result"]["steps"]
    card = _artifact(client, job["id"], "README.md").decode()
    for expected in ("library_name: peft", models["sentiment"], "learning_rate", "eval_accuracy", file_id):
        assert expected in card


def test_causal_lm_adapter_changes_generation_and_is_served_on_the_resident_base(
        client: httpx.Client, models: dict[str, str], lm_adapter: dict[str, Any]) -> None:
    result = lm_adapter["result"]
    assert result["train_loss"] < result["metrics"]["initial"]["eval_loss"]
    assert {"merged/config.json", "merged/model.safetensors"} <= _names(lm_adapter)
    base = {"kind": "inference", "model": models["gpt2"], "inputs": PROMPTS, "params": GEN}
    plain = run(client, base)
    tuned = run(client, {**base, "params": {**GEN, "adapter": {"job": lm_adapter["id"]}}})
    plain_again = run(client, base)
    assert tuned["status"] == "succeeded", tuned
    assert [r["generated_text"] for r in tuned["result"]] != [r["generated_text"] for r in plain["result"]]
    assert all(r["generated_text"].startswith(" blue") for r in tuned["result"])
    assert plain_again["result"] == plain["result"]  # jobs without an adapter run on the untouched base
    assert tuned["timings"]["model_load_ms"] == 0 and plain_again["timings"]["model_load_ms"] == 0
    logs = [e["data"]["message"] for e in sse_events(client, tuned["id"]) if e["event"] == "log"]
    assert any("adapter loaded" in m for m in logs)


def test_another_tenant_cannot_use_the_adapter_by_job_id_or_by_its_path(
        client_b: httpx.Client, models: dict[str, str], lm_adapter: dict[str, Any]) -> None:
    from tests.conftest import SESSION_DIR

    stored = SESSION_DIR / "artifacts" / "alpha" / lm_adapter["id"] / "adapter"
    assert (stored / "adapter_config.json").is_file()
    refs = [({"job": lm_adapter["id"]}, "params.adapter.job"), ({"path": str(stored)}, "params.adapter.path"),
            (str(stored.parent / "merged"), "model")]
    for ref, field in refs:
        body = {"kind": "inference", "model": models["gpt2"], "inputs": "x", "params": {**GEN, "adapter": ref}}
        if field == "model":
            body = {**body, "model": ref, "params": GEN}
        resp = client_b.post("/v1/jobs", json=body)
        assert resp.status_code == 422 and resp.json()["error"]["field"] == field, resp.text


def test_dpo_runs_a_few_steps_and_prefers_the_chosen_answers(client: httpx.Client, models: dict[str, str]) -> None:
    file_id = upload(client, preference_rows(120))
    job = run(client, _finetune(models["gpt2"], {
        "trainer": "dpo", "data": {"file_id": file_id}, "lora": LORA, "dpo": {"beta": 0.1},
        "training": {"max_steps": 6, "learning_rate": 1e-2, "batch_size": 8, "log_every": 2}}), timeout=280)
    assert job["status"] == "succeeded", job
    metrics = job["result"]["metrics"]
    assert job["result"]["steps"] == 6 and metrics["rewards/margins"] > 0
    progress = [e["data"] for e in sse_events(client, job["id"]) if e["event"] == "progress"]
    assert [p["done"] for p in progress if p.get("loss") is not None] == [2, 4, 6]
    assert "adapter/adapter_model.safetensors" in _names(job)


def test_cancel_mid_training_stops_at_the_next_step_with_a_checkpoint(
        client: httpx.Client, models: dict[str, str]) -> None:
    file_id = upload(client, completion_rows(100))
    job = submit(client, _finetune(models["gpt2"], {
        "data": {"file_id": file_id}, "lora": LORA,
        "training": {"max_steps": 5000, "batch_size": 4, "checkpoint_every": 4000}}))
    wait_for(lambda: (client.get(f"/v1/jobs/{job['id']}").json()["progress"] or {}).get("done", 0) >= 3, 240,
             "training progress")
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    final = wait_status(client, job["id"], timeout=60)
    assert final["status"] == "cancelled"
    stopped_at = final["progress"]["done"]
    assert 3 <= stopped_at < 5000
    assert f"checkpoints/step-{stopped_at:08d}/state.json" in _names(final)
    logs = [e["data"]["message"] for e in sse_events(client, job["id"]) if e["event"] == "log"]
    assert f"cancelled at step {stopped_at}; checkpoint saved" in logs


def _pool_child(worker: Service) -> psutil.Process:
    children = psutil.Process(worker.pid).children()
    assert len(children) == 1, children
    return children[0]


def test_worker_killed_mid_finetune_resumes_from_its_checkpoint_and_completes_once(
        client: httpx.Client, models: dict[str, str], worker: Service) -> None:
    file_id = upload(client, completion_rows(200))
    job = submit(client, _finetune(models["gpt2"], {
        "data": {"file_id": file_id}, "lora": LORA,
        "training": {"max_steps": 200, "batch_size": 8, "checkpoint_every": 10, "log_every": 10}}))

    def checkpointed() -> bool:
        rec = client.get(f"/v1/jobs/{job['id']}").json()
        return any(n.startswith("checkpoints/") and n.endswith("state.json") for n in _names(rec))
    wait_for(checkpointed, 240, "a first checkpoint", interval=0.02)
    child = _pool_child(worker)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    final = wait_status(client, job["id"], timeout=280)
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 2 and final["result"]["steps"] == 200
    resumed = final["result"]["resumed_from_step"]
    assert resumed >= 10 and resumed % 10 == 0
    events = sse_events(client, job["id"])
    kinds = [e["event"] for e in events]
    assert kinds.count("completed") == 1 and kinds.count("started") == 2
    assert f"resuming from checkpoint at step {resumed}" in [e["data"].get("message") for e in events]
    assert worker.alive()


def test_evaluate_metrics_agree_with_sklearn(client: httpx.Client, models: dict[str, str]) -> None:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    file_id = upload(client, sentiment_rows(80, seed=5), "parquet")
    job = run(client, {"kind": "evaluate", "model": models["sentiment"], "params": {
        "task_type": "sequence-classification", "metrics": ["accuracy", "f1", "precision", "recall"],
        "data": {"file_id": file_id, "columns": {"text": "sentence", "label": "y"}}}})
    assert job["status"] == "succeeded", job
    rows = [json.loads(line) for line in _artifact(client, job["id"], "predictions.jsonl").splitlines()]
    assert len(rows) == job["result"]["rows"] == 80
    y, p = [r["reference"] for r in rows], [r["prediction"] for r in rows]
    expected = {"accuracy": accuracy_score(y, p), "f1": f1_score(y, p, zero_division=0),
                "precision": precision_score(y, p, zero_division=0), "recall": recall_score(y, p, zero_division=0)}
    assert job["result"]["metrics"] == pytest.approx(expected, abs=1e-9)


def test_evaluate_with_an_adapter_scores_generations_like_sacrebleu_and_rouge_score(
        client: httpx.Client, models: dict[str, str], lm_adapter: dict[str, Any]) -> None:
    import sacrebleu
    from rouge_score import rouge_scorer

    file_id = upload(client, [{"text": p, "reference": "blue and calm"} for p in PROMPTS * 10])
    body = {"kind": "evaluate", "model": models["gpt2"], "params": {
        "task_type": "causal-lm", "metrics": ["bleu", "sacrebleu", "rouge"], "max_new_tokens": 4,
        "data": {"file_id": file_id}, "adapter": {"job": lm_adapter["id"]}}}
    tuned = run(client, body)
    plain = run(client, {**body, "params": {k: v for k, v in body["params"].items() if k != "adapter"}})
    assert tuned["status"] == plain["status"] == "succeeded", (tuned, plain)
    rows = [json.loads(line) for line in _artifact(client, tuned["id"], "predictions.jsonl").splitlines()]
    preds, refs = [r["prediction"] for r in rows], [r["reference"] for r in rows]
    scores = tuned["result"]["metrics"]
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score / 100, abs=1e-9)
    assert scores["sacrebleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-9)
    scorer = rouge_scorer.RougeScorer(["rouge1"])
    rouge1 = sum(scorer.score(r, p)["rouge1"].fmeasure for p, r in zip(preds, refs)) / len(preds)
    assert scores["rouge1"] == pytest.approx(rouge1, abs=1e-9)
    assert scores["rouge1"] > plain["result"]["metrics"]["rouge1"]  # the adapter learned the reference


@pytest.mark.parametrize("algorithm", ["bpe", "wordpiece", "unigram"])
def test_tokenizer_job_trains_a_loadable_tokenizer(client: httpx.Client, algorithm: str, tmp_path: Any) -> None:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    file_id = upload(client, corpus_rows(300))
    sample = "the queue holds jobs for workers!"
    job = run(client, {"kind": "tokenizer", "model": f"toy-{algorithm}", "params": {
        "algorithm": algorithm, "vocab_size": 400, "min_frequency": 1, "sample": sample,
        "data": {"file_id": file_id, "columns": {"text": "body"}}}})
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert 0 < result["vocab_size"] <= 400 and result["rows"] == 300
    assert result["sample"]["round_trip"] is True and result["sample"]["decoded"] == sample
    path = tmp_path / "tokenizer.json"
    path.write_bytes(_artifact(client, job["id"], "tokenizer.json"))
    assert Tokenizer.from_file(str(path)).encode(sample).ids == result["sample"]["ids"]
    fast = PreTrainedTokenizerFast(tokenizer_file=str(path))
    assert fast(sample)["input_ids"] == result["sample"]["ids"]
    assert fast.decode(result["sample"]["ids"], skip_special_tokens=True) == sample


def test_hub_model_not_in_cache_fails_clearly_offline(client: httpx.Client) -> None:
    file_id = upload(client, completion_rows(10))
    job = run(client, _finetune("no-such-org/not-cached", {"data": {"file_id": file_id}}))
    assert job["status"] == "failed"
    assert "offline" in job["error"]["message"] and "no-such-org/not-cached" in job["error"]["message"]
    assert run(client, {"kind": "synthetic", "model": "none", "params": {}})["status"] == "succeeded"
