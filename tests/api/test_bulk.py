"""Bulk submits refuse bad input as a whole: 422 naming ``jobs.<i>.<field>``, and no job is stored."""
from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.test_validation import CASES, GOOD


def _count(client: httpx.Client) -> int:
    return len(client.get("/v1/jobs", params={"limit": 500}).json()["jobs"])


@pytest.mark.parametrize(("body", "field"), CASES, ids=[f for _, f in CASES])
def test_one_bad_job_refuses_the_request_naming_its_index(client: httpx.Client, body: dict[str, Any],
                                                          field: str) -> None:
    before = _count(client)
    resp = client.post("/v1/jobs/batch", json={"jobs": [GOOD, body, GOOD]})
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["field"] == f"jobs.1.{field}", err
    assert err["message"].startswith("jobs.1"), err
    assert _count(client) == before


@pytest.mark.parametrize(("payload", "field"), [
    ({"jobs": []}, "jobs"),
    ({}, "jobs"),
    ({"jobs": GOOD}, "jobs"),
    ({"jobs": [GOOD], "extra": 1}, "extra"),
])
def test_malformed_bulk_bodies_are_422(client: httpx.Client, payload: dict[str, Any], field: str) -> None:
    resp = client.post("/v1/jobs/batch", json=payload)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field


def test_more_jobs_than_allowed_is_422_naming_jobs(client: httpx.Client) -> None:
    before = _count(client)
    small = {"kind": "synthetic", "model": "none", "params": {}}
    resp = client.post("/v1/jobs/batch", json={"jobs": [small] * 1001})  # GPUQ_BULK_MAX_JOBS defaults to 1000
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["field"] == "jobs" and "1000" in err["message"]
    assert _count(client) == before


def test_accepted_jobs_belong_to_the_caller(client: httpx.Client, client_b: httpx.Client) -> None:
    small = {"kind": "synthetic", "model": "none", "params": {}}
    resp = client.post("/v1/jobs/batch", json={"jobs": [small, small]})
    assert resp.status_code == 202, resp.text
    jobs = resp.json()["jobs"]
    assert len(jobs) == 2 and all(j["status"] in ("queued", "running", "succeeded") for j in jobs)
    for job in jobs:
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
        assert client_b.get(f"/v1/jobs/{job['id']}").status_code == 404
