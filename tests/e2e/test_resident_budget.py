"""The resident-model budget on a real worker: preloaded pinned models, LRU eviction under a byte budget, and
a model too big for the budget refused before loading, with a clear error.
"""
from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuq.common import keys
from tests.conftest import KEY_A, MODEL_ROOT
from tests.support.jobs import wait_status
from tests.support.models import minilm_copy, tiny
from tests.support.stack import MiniStack, client_fixture, worker_env

MiB = 1 << 20


@pytest.fixture(scope="module")
def pinned() -> str:
    return tiny(MODEL_ROOT, "bert-sentiment")


@pytest.fixture(scope="module")
def stack(log_dir: Path, pinned: str, models: dict[str, str]) -> Iterator[MiniStack]:
    # all-MiniLM-L6-v2 takes ~87 MiB in float32: one fits in 120 MiB, two do not.
    env = {**worker_env(), "GPUQ_MODEL_CACHE_BUDGET": "120MiB", "GPUQ_TORCH_THREADS": "1",
           "GPUQ_PRELOAD": f"text-classification:{pinned}"}
    with MiniStack(env, log_dir, "budget") as s:
        s.worker("mem", concurrency=4)
        yield s


client = client_fixture(KEY_A)


def run(client: httpx.Client, model: str, task: str = "feature-extraction") -> dict[str, Any]:
    body = {"kind": "inference", "model": model, "inputs": "budget", "params": {"task": task}}
    resp = client.post("/v1/jobs", json=body, headers={"Prefer": "wait=120"})
    return wait_status(client, resp.json()["id"])


def test_preloaded_model_is_resident_before_its_first_job(client: httpx.Client, stack: MiniStack,
                                                          pinned: str) -> None:
    node = stack.node("mem")  # live: which, on a threads worker, it becomes only after preloading
    assert node and pinned in stack.r().smembers(keys.worker_models(node))
    record = run(client, pinned, "text-classification")
    assert record["status"] == "succeeded" and record["timings"]["model_load_ms"] == 0


def test_least_recently_used_model_is_evicted_to_stay_in_budget(client: httpx.Client, stack: MiniStack,
                                                                 models: dict[str, str], pinned: str) -> None:
    other = minilm_copy(MODEL_ROOT, "minilm-b")
    loads = [run(client, m)["timings"]["model_load_ms"] for m in (models["minilm"], other, models["minilm"])]
    assert all(ms > 0 for ms in loads), loads  # the third job had to load the first model again
    assert "evicted" in stack.log("mem")
    # The pinned model was never evicted.
    assert run(client, pinned, "text-classification")["timings"]["model_load_ms"] == 0


def big_fake_model(name: str, claimed_bytes: int) -> str:
    """A model directory whose weights file *claims* ``claimed_bytes`` of float32 weights in its header (the
    data is not there: a load would fail, so refusing it with a budget error proves nothing was loaded)."""
    src, target = Path(tiny(MODEL_ROOT, "bert-sentiment")), MODEL_ROOT / name
    if not target.exists():
        shutil.copytree(src, target)
        header = json.dumps({"weight": {"dtype": "F32", "shape": [claimed_bytes // 4],
                                        "data_offsets": [0, claimed_bytes]}}).encode()
        (target / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    return str(target)


def test_model_that_cannot_fit_fails_fast_naming_the_budget(client: httpx.Client,
                                                            models: dict[str, str]) -> None:
    record = run(client, big_fake_model("too-big", 500 * MiB), "text-classification")
    assert record["status"] == "failed"
    assert record["error"]["type"] == "resource_exhausted", record["error"]
    assert "budget" in record["error"]["message"] and "500.0 MiB" in record["error"]["message"]
    assert run(client, models["minilm"])["status"] == "succeeded"  # the worker keeps serving
