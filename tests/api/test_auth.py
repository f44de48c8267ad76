"""Authentication and tenant isolation over real HTTP."""
from __future__ import annotations

import httpx
import pytest

from tests.support.jobs import run


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"},
                                     {"Authorization": "Bearer"}])
def test_missing_or_bad_key_is_401(anon: httpx.Client, headers: dict[str, str]) -> None:
    resp = anon.get("/v1/jobs", headers=headers)
    assert resp.status_code == 401
    assert resp.json()["error"]["field"] == "Authorization"
    assert anon.post("/v1/jobs", json={}, headers=headers).status_code == 401


def test_other_tenants_job_is_404_everywhere(client: httpx.Client, client_b: httpx.Client) -> None:
    job = run(client, {"kind": "synthetic", "model": "none", "params": {"steps": 1}})
    jid = job["id"]
    for method, path in [("GET", f"/v1/jobs/{jid}"), ("GET", f"/v1/jobs/{jid}/events"),
                         ("POST", f"/v1/jobs/{jid}/cancel"), ("GET", f"/v1/jobs/{jid}/artifacts"),
                         ("GET", f"/v1/jobs/{jid}/artifacts/result.json")]:
        resp = client_b.request(method, path)
        assert resp.status_code == 404, (method, path, resp.text)
    assert jid not in {j["id"] for j in client_b.get("/v1/jobs").json()["jobs"]}
    assert jid in {j["id"] for j in client.get("/v1/jobs").json()["jobs"]}


def test_list_filters_by_status_and_kind(client: httpx.Client) -> None:
    job = run(client, {"kind": "synthetic", "model": "none", "params": {"steps": 1}})
    listed = client.get("/v1/jobs", params={"status": "succeeded", "kind": "synthetic", "limit": 500}).json()
    assert job["id"] in {j["id"] for j in listed["jobs"]}
    assert all(j["status"] == "succeeded" and j["kind"] == "synthetic" for j in listed["jobs"])
    assert client.get("/v1/jobs", params={"kind": "inference", "limit": 500}).json()["jobs"] == [] or all(
        j["kind"] == "inference" for j in client.get("/v1/jobs", params={"kind": "inference"}).json()["jobs"])
    assert client.get("/v1/jobs", params={"status": "bogus"}).status_code == 422
    assert len(client.get("/v1/jobs", params={"limit": 1}).json()["jobs"]) == 1


def test_health_and_readiness(anon: httpx.Client) -> None:
    assert anon.get("/healthz").json() == {"status": "ok"}
    ready = anon.get("/readyz")
    assert ready.status_code == 200 and ready.json()["workers"] >= 1
    assert anon.get("/openapi.json").json()["info"]["title"] == "gpuq"
