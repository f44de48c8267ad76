"""Control characters in any field that names a model, an adapter or data: a JSON 422 naming the field.

A NUL used to reach the filesystem calls (``ValueError: embedded null byte``) and come back as a plain-text
500 on a closed connection.
"""
from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import MODEL_ROOT

CONTROLS = ["\x00", "\x1f", "\x7f", "\x85"]  # NUL, another C0, DEL, a C1


def _cases(bad: str) -> list[tuple[dict[str, Any], str]]:
    gpt2 = str(MODEL_ROOT / "gpt2")
    text = {"kind": "inference", "model": gpt2, "inputs": "x", "params": {"task": "text-generation"}}
    data = {"path": f"{MODEL_ROOT}/data/rows{bad}.csv"}
    batch = {"kind": "batch_inference", "model": gpt2, "params": {"inference": {"task": "text-generation"}}}
    finetune = {"kind": "finetune", "params": {"data": {"file_id": "file-" + "0" * 32}}}
    return [
        ({**text, "model": f"{gpt2}{bad}"}, "model"),
        ({**text, "model": f"org/na{bad}me"}, "model"),
        ({**text, "params": {"task": "text-generation", "adapter": {"path": f"{MODEL_ROOT}/a{bad}"}}},
         "params.adapter.path"),
        ({**text, "params": {"task": "text-generation", "adapter": f"./lora{bad}"}}, "params.adapter.path"),
        ({**text, "params": {"task": "text-generation", "adapter": {"repo": f"org/lo{bad}ra"}}},
         "params.adapter.repo"),
        ({**batch, "params": {**batch["params"], "data": data}}, "params.data.path"),
        ({**batch, "params": {**batch["params"], "data": {"dataset": f"org/d{bad}"}}}, "params.data.dataset"),
        ({**finetune, "model": f"{gpt2}{bad}"}, "model"),
        ({"kind": "image", "model": f"{MODEL_ROOT}/sd{bad}", "params": {"prompt": "x"}}, "model"),
        ({"kind": "image", "model": gpt2, "params": {"prompt": "x", "adapter": f"{MODEL_ROOT}/l{bad}"}},
         "params.adapter.ref"),
        ({"kind": "image", "model": gpt2, "params": {"prompt": "x", "adapter": f"job:{'0' * 32}/a{bad}"}},
         "params.adapter.ref"),
    ]


@pytest.mark.parametrize("bad", CONTROLS, ids=["nul", "c0", "del", "c1"])
def test_control_characters_in_reference_fields_are_422_naming_the_field(client: httpx.Client, bad: str) -> None:
    for body, field in _cases(bad):
        resp = client.post("/v1/jobs", json=body)
        assert resp.status_code == 422, (field, resp.status_code, resp.text)
        assert resp.headers["content-type"] == "application/json"
        assert resp.json()["error"]["field"] == field, (field, resp.json())


def test_a_nul_in_a_bulk_submit_names_the_job_and_its_field(client: httpx.Client) -> None:
    job = {"kind": "inference", "model": f"{MODEL_ROOT}/gpt2\x00", "inputs": "x", "params": {"task": "text-generation"}}
    resp = client.post("/v1/jobs/batch", json={"jobs": [job]})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "jobs.0.model", resp.text
