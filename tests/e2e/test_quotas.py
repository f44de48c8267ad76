"""Per-tenant quotas: jobs in flight and submit rate, 429 with Retry-After, from settings."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.jobs import wait_status
from tests.support.processes import start_api

KEY_G, KEY_D = "key-gamma-0123456789", "key-delta-0123456789"
QUOTAS = {"gamma": {"max_in_flight": 2}, "delta": {"submit_rate_per_s": 0.5, "submit_burst": 3}}


@pytest.fixture(scope="module")
def quota_api(service_env: dict[str, str], log_dir: Path, worker: object) -> Iterator[str]:
    """An API whose tenants gamma (2 in flight) and delta (3 burst, 0.5/s) have quotas; alpha has none."""
    env = {**service_env, "GPUQ_TENANT_QUOTAS": json.dumps(QUOTAS),
           "GPUQ_API_KEYS": f"{service_env['GPUQ_API_KEYS']},gamma:{KEY_G},delta:{KEY_D}"}
    svc, url = start_api(env, log_dir)
    yield url
    svc.stop()


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _job(steps: int = 1, step_ms: int = 0) -> dict[str, object]:
    return {"kind": "synthetic", "model": f"quota-{uuid.uuid4().hex[:6]}",
            "params": {"steps": steps, "step_ms": step_ms}}


def test_in_flight_quota_refuses_with_429_until_a_job_finishes(quota_api: str) -> None:
    with _client(quota_api, KEY_G) as gamma:
        first = gamma.post("/v1/jobs", json=_job(200, 50))
        second = gamma.post("/v1/jobs", json=_job(200, 50))
        assert first.status_code == 202 and second.status_code == 202
        refused = gamma.post("/v1/jobs", json=_job())
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert error["type"] == "rate_limited" and error["retryable"] is True
        assert "2 jobs queued or running" in error["message"]
        gamma.post(f"/v1/jobs/{second.json()['id']}/cancel")
        wait_status(gamma, second.json()["id"])
        admitted = gamma.post("/v1/jobs", json=_job())
        assert admitted.status_code == 202, admitted.text
        for job in (first.json(), admitted.json()):
            gamma.post(f"/v1/jobs/{job['id']}/cancel")
            wait_status(gamma, job["id"])


def test_submit_rate_is_a_token_bucket_with_retry_after(quota_api: str) -> None:
    with _client(quota_api, KEY_D) as delta:
        key = uuid.uuid4().hex
        body = _job()
        burst = [delta.post("/v1/jobs", json=body if i == 0 else _job(),
                            headers={"Idempotency-Key": key} if i == 0 else {}) for i in range(3)]
        assert [r.status_code for r in burst] == [202, 202, 202]
        refused = delta.post("/v1/jobs", json=_job())
        assert refused.status_code == 429
        retry_after = int(refused.headers["Retry-After"])
        assert 1 <= retry_after <= 2  # one token refills in 2 s at 0.5/s
        assert "0.5 jobs/s" in refused.json()["error"]["message"]
        replay = delta.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        assert replay.status_code == 200  # a replay creates nothing, so it is not charged
        time.sleep(retry_after + 0.1)
        assert delta.post("/v1/jobs", json=_job()).status_code == 202


def test_tenants_without_quota_are_not_limited(quota_api: str) -> None:
    with _client(quota_api, "key-alpha-0123456789") as alpha:
        codes = [alpha.post("/v1/jobs", json=_job()).status_code for _ in range(6)]
    assert codes == [202] * 6


def test_bulk_submit_over_the_in_flight_quota_stores_nothing(quota_api: str) -> None:
    with _client(quota_api, KEY_G) as gamma:
        before = len(gamma.get("/v1/jobs", params={"limit": 500}).json()["jobs"])
        refused = gamma.post("/v1/jobs/batch", json={"jobs": [_job(), _job(), _job()]})
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limited"
        assert len(gamma.get("/v1/jobs", params={"limit": 500}).json()["jobs"]) == before
        admitted = gamma.post("/v1/jobs/batch", json={"jobs": [_job(), _job()]}, headers={"Prefer": "wait=30"})
        assert admitted.status_code == 200, admitted.text
        assert [j["status"] for j in admitted.json()["jobs"]] == ["succeeded", "succeeded"]


def test_bulk_submit_larger_than_the_rate_burst_is_refused_whole(quota_api: str) -> None:
    with _client(quota_api, KEY_D) as delta:
        refused = delta.post("/v1/jobs/batch", json={"jobs": [_job() for _ in range(4)]})  # burst is 3
        assert refused.status_code == 429 and "burst of 3" in refused.json()["error"]["message"]
