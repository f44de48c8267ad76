"""Fine-tuning through the official openai SDK: a LoRA finetune job, its events and checkpoints, and the ft:
model it leaves served at once by chat/completions."""
from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import KEY_A, KEY_B
from tests.support.jobs import wait_status
from tests.support.openai_sdk import sync_client

CHAT_ROWS = [{"messages": [{"role": "user", "content": f"what colour is the sky {i}?"},
                           {"role": "assistant", "content": " blue and calm"}]} for i in range(12)]
PREFERENCE_ROWS = [{"input": {"messages": [{"role": "user", "content": f"sky {i}?"}]},
                    "preferred_output": [{"role": "assistant", "content": " blue"}],
                    "non_preferred_output": [{"role": "assistant", "content": " green"}]} for i in range(6)]


def _upload(oai: openai.OpenAI, rows: list[dict[str, Any]]) -> str:
    content = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    return oai.files.create(file=("train.jsonl", content), purpose="fine-tune").id


@pytest.fixture(scope="module")
def tuned(api_url: str, model: str) -> Any:
    """One finished fine-tune of the tiny chat GPT-2 on chat rows (shared by the tests below)."""
    with sync_client(api_url, KEY_A, max_retries=0) as oai:
        job = oai.fine_tuning.jobs.create(
            model=model, training_file=_upload(oai, CHAT_ROWS), suffix="blue", seed=3,
            method={"type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 50}}})
        deadline = time.monotonic() + 240
        while job.status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = oai.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job
    return job


def test_fine_tuning_job_maps_hyperparameters_onto_a_finetune_job(tuned: Any, client: httpx.Client,
                                                                  model: str) -> None:
    assert tuned.object == "fine_tuning.job" and tuned.model == model and tuned.seed == 3
    assert tuned.fine_tuned_model == f"ft:{model}:alpha:{tuned.id.removeprefix('ftjob-')}"
    assert tuned.user_provided_suffix == "blue"
    assert (tuned.hyperparameters.n_epochs, tuned.hyperparameters.batch_size) == (2, 4)
    assert tuned.hyperparameters.learning_rate_multiplier == pytest.approx(50)
    assert tuned.method.type == "supervised"
    record = client.get(f"/v1/jobs/{tuned.id.removeprefix('ftjob-')}").json()
    assert record["kind"] == "finetune" and record["params"]["trainer"] == "sft"
    assert record["params"]["training"]["learning_rate"] == pytest.approx(1e-2)
    assert record["params"]["training"]["epochs"] == 2 and record["params"]["data"]["file_id"] == tuned.training_file


def test_events_and_checkpoints_come_from_the_job(oai: openai.OpenAI, tuned: Any) -> None:
    events = list(oai.fine_tuning.jobs.list_events(tuned.id, limit=100))
    assert events[0].message == "The job has successfully completed" and events[-1].message == "Job queued"
    metrics = [e for e in events if e.type == "metrics"]
    assert any("train_loss" in (e.data or {}) for e in metrics)  # type: ignore[operator]
    checkpoints = list(oai.fine_tuning.jobs.checkpoints.list(tuned.id))
    assert [c.fine_tuned_model_checkpoint for c in checkpoints] == [tuned.fine_tuned_model]
    assert checkpoints[0].step_number > 0 and checkpoints[0].metrics.train_loss is not None
    assert tuned.id in [j.id for j in oai.fine_tuning.jobs.list()]


def test_the_fine_tuned_model_is_listed_and_served_at_once(oai: openai.OpenAI, tuned: Any,
                                                           client: httpx.Client, api_url: str) -> None:
    assert tuned.fine_tuned_model in [m.id for m in oai.models.list()]
    ask: dict[str, Any] = {"messages": [{"role": "user", "content": "what colour is the sky 3?"}],
                           "temperature": 0, "max_tokens": 6}
    raw = oai.chat.completions.with_raw_response.create(model=tuned.fine_tuned_model, **ask)
    base = oai.chat.completions.create(model=tuned.model, **ask).choices[0].message.content
    assert raw.parse().choices[0].message.content != base  # the adapter is applied on the resident base
    job = client.get(f"/v1/jobs/{raw.headers['x-gpuq-job-id']}").json()
    assert job["params"]["adapter"] == {"job": tuned.id.removeprefix("ftjob-")}
    with sync_client(api_url, KEY_B, max_retries=0) as other:
        with pytest.raises(openai.NotFoundError):
            other.fine_tuning.jobs.retrieve(tuned.id)
        with pytest.raises(openai.NotFoundError) as caught:
            other.chat.completions.create(model=tuned.fine_tuned_model, messages=[{"role": "user", "content": "x"}])
        assert caught.value.code == "model_not_found"  # type: ignore[attr-defined]


def test_dpo_method_and_cancel(oai: openai.OpenAI, client: httpx.Client, model: str) -> None:
    job = oai.fine_tuning.jobs.create(model=model, training_file=_upload(oai, PREFERENCE_ROWS),
                                      method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3}}})
    cancelled = oai.fine_tuning.jobs.cancel(job.id)
    assert cancelled.id == job.id and cancelled.method.type == "dpo"
    record = wait_status(client, job.id.removeprefix("ftjob-"))
    assert record["status"] == "cancelled"
    assert record["params"]["trainer"] == "dpo" and record["params"]["dpo"]["beta"] == pytest.approx(0.3)
    assert oai.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_bad_fine_tuning_requests_name_their_parameter(oai: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.fine_tuning.jobs.create(model=model, training_file="file-" + "0" * 32)
    assert caught.value.param == "training_file"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as caught:
        oai.fine_tuning.jobs.create(model=model, training_file=_upload(oai, CHAT_ROWS),
                                    method={"type": "reinforcement"})
    assert caught.value.param == "method.type"  # type: ignore[attr-defined]
