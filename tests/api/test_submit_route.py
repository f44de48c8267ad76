"""The submit route reads its body, tenant and headers itself: every answer to a bad request is the one a route
declared with FastAPI's body model, dependency and header parameters gives (status and JSON alike), its
OpenAPI operation is unchanged, and a fresh job's 202 is the validated record's JSON."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.testclient import TestClient

from gpuq.api.deps import Tenant
from gpuq.api.main import create_app
from gpuq.api.routes.jobs import IdempotencyKey, PreferHeader
from gpuq.api.submission import fresh_json, prepare
from gpuq.common.records import to_record
from gpuq.common.schemas import JobRequest
from gpuq.common.settings import get_settings
from tests.conftest import KEY_A

JSON = {"Content-Type": "application/json"}
AUTH = {"Authorization": f"Bearer {KEY_A}"}
CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("malformed JSON", b"{not json", {**AUTH, **JSON}),
    ("malformed JSON, no key", b"{not json", JSON),
    ("empty body", b"", {**AUTH, **JSON}),
    ("empty body, no key", b"", {}),
    ("no content type", b'{"kind":"synthetic","model":"m"}', AUTH),
    ("text content type", b"kind=inference", {**AUTH, "Content-Type": "text/plain"}),
    ("json suffix content type", b'{"kind": 5}', {**AUTH, "Content-Type": "application/vnd.x+json; charset=utf-8"}),
    ("not an object", b'"just a string"', {**AUTH, **JSON}),
    ("extra field", b'{"kind":"synthetic","model":"m","zz":1}', {**AUTH, **JSON}),
    ("missing field", b'{"model":"m"}', {**AUTH, **JSON}),
    ("NaN", b'{"kind":"synthetic","model":"x","inputs":NaN}', {**AUTH, **JSON}),
    ("bad priority and long Prefer", b'{"kind":"synthetic","model":"m","priority":"urgent"}',
     {**AUTH, **JSON, "Prefer": "p" * 300}),
    ("bad body and long key", b'{"model":"m"}', {**AUTH, **JSON, "Idempotency-Key": "k" * 256}),
    ("bad body, no key", b'{"model":"m"}', JSON),
    ("nested too deep", b"[" * 200_000, {**AUTH, **JSON}),
    ("not UTF-8", b'{"kind": "\xff\xfe"}', {**AUTH, **JSON}),
]


@pytest.fixture(scope="module")
def reference() -> Iterator[TestClient]:
    """A submit route as FastAPI declares it, answering only what it refuses, with the API's error handlers."""
    app = FastAPI()
    for error, handler in create_app().exception_handlers.items():
        app.add_exception_handler(error, handler)

    @app.post("/v1/jobs")
    async def submit(body: JobRequest, tenant: Tenant, idempotency_key: IdempotencyKey = None,
                     prefer: PreferHeader = None) -> Response:
        return Response(b"{}", status_code=299)

    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize(("name", "body", "headers"), CASES, ids=[c[0] for c in CASES])
def test_a_refused_submit_is_answered_as_fastapi_would(reference: TestClient, api_url: str, name: str, body: bytes,
                                                        headers: dict[str, str]) -> None:
    expected = reference.post("/v1/jobs", content=body, headers=headers)
    assert expected.status_code != 299
    got = httpx.post(f"{api_url}/v1/jobs", content=body, headers=headers, timeout=30)
    assert (got.status_code, got.json()) == (expected.status_code, expected.json())


def test_the_submit_operation_is_documented_as_before() -> None:
    app = FastAPI()

    @app.post("/v1/jobs", status_code=202)
    async def submit_job(body: JobRequest, idempotency_key: IdempotencyKey = None,
                         prefer: PreferHeader = None) -> None:
        """Placeholder."""

    declared = app.openapi()["paths"]["/v1/jobs"]["post"]
    ours = create_app().openapi()["paths"]["/v1/jobs"]["post"]
    for part in ("parameters", "requestBody"):
        assert ours[part] == declared[part], part
    assert ours["responses"]["422"] == declared["responses"]["422"]


BODIES: list[dict[str, Any]] = [
    {"kind": "synthetic", "model": "m", "params": {"steps": 3, "step_ms": 1.5}, "priority": "low"},
    {"kind": "synthetic", "model": "naïve 漢字", "inputs": {"a": [1, 2.5, None, "é"]}},
    {"kind": "inference", "model": "{minilm}", "inputs": ["a", "b"], "params": {"task": "feature-extraction"}},
    {"kind": "inference", "model": "{minilm}", "inputs": "x", "params": {"task": "feature-extraction"},
     "webhook": {"url": "http://127.0.0.1:9/hook", "events": ["completed", "completed", "failed"]}},
]


@pytest.mark.parametrize("raw", BODIES)
def test_a_fresh_jobs_answer_is_the_validated_records_json(raw: dict[str, Any], models: dict[str, str]) -> None:
    body = JobRequest.model_validate(json.loads(json.dumps(raw).replace("{minilm}", models["minilm"])))
    fields = prepare(body, "alpha", get_settings()).fields
    assert fresh_json(fields) == to_record(fields).model_dump_json().encode()


def test_a_submit_answers_202_with_the_stored_record(client: httpx.Client) -> None:
    resp = client.post("/v1/jobs", json={"kind": "synthetic", "model": "answer", "params": {"steps": 0}})
    assert resp.status_code == 202 and resp.headers["Location"] == f"/v1/jobs/{resp.json()['id']}"
    stored = client.get(f"/v1/jobs/{resp.json()['id']}").json()
    answered = resp.json()
    for field in ("id", "tenant", "kind", "model", "queue", "priority", "params", "webhook"):
        assert answered[field] == stored[field], field
    assert answered["timings"]["submitted_at"] == stored["timings"]["submitted_at"]


def test_a_fresh_answer_with_an_integer_orjson_refuses_is_still_the_records_json() -> None:
    body = JobRequest(kind="synthetic", model="m", params={"steps": 1})
    fields = prepare(body, "alpha", get_settings()).fields
    fields = {**fields, "params": {**fields["params"], "huge": 2**70}}
    assert fresh_json(fields) == to_record(fields).model_dump_json().encode()
