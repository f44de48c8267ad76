"""Bad image requests get a 422 naming the field before anything is queued."""
from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL_ROOT
from tests.support.images import tiny_sd


@pytest.fixture(scope="module")
def sd() -> str:
    return str(tiny_sd(MODEL_ROOT))


def _body(sd: str, **params: Any) -> dict[str, Any]:
    return {"kind": "image", "model": sd, "params": {"prompt": "a cat", **params}}


CASES: list[tuple[dict[str, Any], dict[str, Any], str]] = [
    ({"prompt": ""}, {}, "params.prompt"),
    ({"prompt": "   "}, {}, "params.prompt"),
    ({"prompt": ["a cat", ""]}, {}, "params.prompt"),
    ({"prompt": []}, {}, "params.prompt"),
    ({"prompt": 5}, {}, "params.prompt"),
    ({"prompt": "x" * 2001}, {}, "params.prompt"),
    ({"negative_prompt": "x" * 2001}, {}, "params.negative_prompt"),
    ({"width": 100}, {}, "params.width"),
    ({"height": 68}, {}, "params.height"),
    ({"width": 32}, {}, "params.width"),
    ({"width": 4096}, {}, "params.width"),
    ({"height": 8192}, {}, "params.height"),
    ({"num_inference_steps": 151}, {}, "params.num_inference_steps"),
    ({"num_inference_steps": 0}, {}, "params.num_inference_steps"),
    ({"num_images": 9}, {}, "params.num_images"),
    ({"prompt": ["a", "b", "c"], "num_images": 3}, {}, "params.num_images"),
    ({"guidance_scale": -1}, {}, "params.guidance_scale"),
    ({"guidance_scale": float("nan")}, {}, "params.guidance_scale"),
    ({"seed": -1}, {}, "params.seed"),
    ({"seed": 2**32}, {}, "params.seed"),
    ({"scheduler": "warp-drive"}, {}, "params.scheduler"),
    ({"preview_every": 0}, {}, "params.preview_every"),
    ({"cpu_offload": True}, {}, "params.cpu_offload"),
    ({"adapter": "/etc"}, {}, "params.adapter.ref"),
    ({"adapter": "not a repo!"}, {}, "params.adapter.ref"),
    ({"adapter": "job:../../x"}, {}, "params.adapter.ref"),
    ({"adapter": "job:" + "0" * 32}, {}, "params.adapter.ref"),
    ({"adapter": {"ref": "org/lora", "weight": 5}}, {}, "params.adapter.weight"),
    ({"adapter": {"ref": "org/lora", "weight_name": "../x.safetensors"}}, {}, "params.adapter.weight_name"),
    ({"push_to_hub": {"repo_id": "someone-else/pics"}}, {}, "params.push_to_hub.repo_id"),
    ({"push_to_hub": {"repo_id": "alpha/pics", "token": "t", "path_in_repo": "../up"}}, {},
     "params.push_to_hub.path_in_repo"),
    ({"steps": 10}, {}, "params.steps"),
    ({}, {"inputs": "a cat"}, "inputs"),
]


@pytest.mark.parametrize(("params", "extra", "field"), CASES, ids=[f"{c[2]}-{n}" for n, c in enumerate(CASES)])
def test_bad_image_request_is_422_naming_the_field(client: httpx.Client, sd: str, params: dict[str, Any],
                                                    extra: dict[str, Any], field: str) -> None:
    body = {"kind": "image", "model": sd, "params": {"prompt": "a cat", **params}, **extra}
    # json.dumps writes NaN as the bare token clients may send; the API must still refuse it.
    resp = client.post("/v1/jobs", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["field"] == field, err
    assert field in err["message"]


def test_model_outside_the_roots_is_422(client: httpx.Client) -> None:
    resp = client.post("/v1/jobs", json={"kind": "image", "model": "/etc", "params": {"prompt": "a cat"}})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "model"


def test_valid_request_is_queued_on_the_image_queue(client: httpx.Client, sd: str) -> None:
    resp = client.post("/v1/jobs", json=_body(sd, num_inference_steps=1, width=64, height=64))
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert job["queue"] == "image" and job["params"]["prompt"] == ["a cat"]
