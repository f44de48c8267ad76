"""Bad input gets a clear 4xx naming the field, and nothing is enqueued."""
from __future__ import annotations

from typing import Any

import httpx
import pytest

GOOD: dict[str, Any] = {"kind": "inference", "model": "sentence-transformers/all-MiniLM-L6-v2",
                        "inputs": "hi", "params": {"task": "feature-extraction"}}


def _with(**changes: Any) -> dict[str, Any]:
    body = {**GOOD, **changes}
    return {k: v for k, v in body.items() if v is not ...}


CASES = [
    (_with(kind="teleport"), "kind"),
    (_with(kind=...), "kind"),
    (_with(params={"task": "levitation"}), "params.task"),
    (_with(params={}), "params.task"),
    (_with(inputs=...), "inputs"),
    (_with(inputs=[]), "inputs"),
    (_with(inputs=42), "inputs"),
    (_with(inputs=["ok", 3]), "inputs"),
    (_with(inputs="   "), "inputs.0"),
    (_with(params={"task": "text-generation", "max_new_tokens": "many"}), "params.max_new_tokens"),
    (_with(params={"task": "text-generation", "max_new_tokens": 10**9}), "params.max_new_tokens"),
    (_with(params={"task": "text-generation", "num_beams": 2.5}), "params.num_beams"),
    (_with(params={"task": "feature-extraction", "trust_remote_code": True}), "params.trust_remote_code"),
    (_with(model="/etc"), "model"),
    (_with(model="../../etc/passwd"), "model"),
    (_with(model="not a repo id!"), "model"),
    (_with(priority="urgent"), "priority"),
    (_with(extra_field=1), "extra_field"),
    (_with(params=[1, 2]), "params"),
]


@pytest.mark.parametrize(("body", "field"), CASES, ids=[f for _, f in CASES])
def test_bad_submit_is_422_naming_the_field(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    before = len(client.get("/v1/jobs", params={"limit": 500}).json()["jobs"])
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["field"] == field, err
    assert field.split(".")[0] in err["message"]
    assert len(client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]) == before


def test_model_path_inside_roots_is_accepted(client: httpx.Client, models: dict[str, str]) -> None:
    resp = client.post("/v1/jobs", json=_with(model=models["minilm"]))
    assert resp.status_code == 202, resp.text


def test_body_over_limit_is_413(client: httpx.Client) -> None:
    resp = client.post("/v1/jobs", json=_with(inputs="x" * 300_000))
    assert resp.status_code == 413
    assert resp.json()["error"]["type"] == "payload_too_large"


def test_body_over_limit_without_content_length_is_413(client: httpx.Client) -> None:
    def chunks() -> Any:
        yield b'{"kind": "inference", "inputs": "'
        for _ in range(30):
            yield b"y" * 10_000
        yield b'"}'
    resp = client.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413


def test_malformed_json_is_422(client: httpx.Client) -> None:
    resp = client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 422


def test_unknown_job_is_404(client: httpx.Client) -> None:
    assert client.get("/v1/jobs/does-not-exist").status_code == 404


def test_traversal_in_artifact_name_is_rejected(client: httpx.Client, models: dict[str, str]) -> None:
    job = client.post("/v1/jobs", json={"kind": "synthetic", "model": "x", "params": {}}).json()
    for name in ["..%2F..%2Fetc%2Fpasswd", "a/../../b", ".hidden"]:
        resp = client.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
        assert resp.status_code in (404, 422), (name, resp.status_code)
