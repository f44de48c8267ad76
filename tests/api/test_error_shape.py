"""Every error the API answers has one shape, ``{"error": {"type", "message", "field", "retryable"}}``, including
the ones Starlette and FastAPI raise before a route runs (unknown route, wrong method, unparsable bodies)."""
from __future__ import annotations

from typing import Any

import httpx
import pytest

JSON = {"Content-Type": "application/json"}
REQUESTS: list[tuple[str, str, str, dict[str, Any], int, str | None]] = [
    ("unknown route", "GET", "/v1/nowhere", {}, 404, None),
    ("unknown route under a prefix", "POST", "/v1/jobs/abc/teleport", {"json": {}}, 404, None),
    ("wrong method", "DELETE", "/v1/jobs", {}, 405, None),
    ("malformed JSON", "POST", "/v1/jobs", {"content": b'{"kind":', "headers": JSON}, 422, "body"),
    ("JSON nested too deep to parse", "POST", "/v1/jobs", {"content": b"[" * 200_000, "headers": JSON}, 400, "body"),
    ("invalid UTF-8", "POST", "/v1/jobs", {"content": b'{"kind": "\xff\xfe"}', "headers": JSON}, 400, "body"),
    ("multipart without a boundary", "POST", "/v1/files",
     {"content": b"abc", "headers": {"Content-Type": "multipart/form-data"}}, 400, "body"),
    ("multipart cut off", "POST", "/v1/files",
     {"content": b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\nab",
      "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, 422, "file"),
    ("body too large", "POST", "/v1/jobs", {"content": b" " * 300_000, "headers": JSON}, 413, "body"),
    ("wrong type in a field", "POST", "/v1/jobs", {"json": {"kind": 3, "model": "x"}}, 422, "kind"),
    ("no such job", "GET", "/v1/jobs/" + "0" * 32, {}, 404, "job_id"),
]


# Paths the native and the OpenAI-compatible API share answer a superset both clients parse: gpuq's shape plus
# OpenAI's ``param`` and ``code``.
SHARED = ("/v1/files", "/v1/models")


def _check_shape(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    allowed = {"type", "message", "field", "retryable", "fields"}
    if resp.request.url.path.startswith(SHARED):
        allowed |= {"param", "code"}
    assert {"type", "message", "field", "retryable"} <= set(error) <= allowed, error
    assert isinstance(error["type"], str) and error["message"] and isinstance(error["retryable"], bool)
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(("name", "method", "path", "kwargs", "status", "field"), REQUESTS,
                         ids=[r[0] for r in REQUESTS])
def test_every_error_has_the_one_shape(client: httpx.Client, name: str, method: str, path: str,
                                       kwargs: dict[str, Any], status: int, field: str | None) -> None:
    error = _check_shape(client.request(method, path, **kwargs), status)
    assert error["field"] == field, error


def test_wrong_method_keeps_the_allow_header(client: httpx.Client) -> None:
    resp = client.delete("/v1/jobs")
    assert _check_shape(resp, 405)["type"] == "method_not_allowed"
    assert "POST" in resp.headers["allow"]


def test_errors_before_authentication_have_the_shape_too(anon: httpx.Client) -> None:
    assert _check_shape(anon.get("/v1/jobs"), 401)["type"] == "unauthorized"
    assert _check_shape(anon.get("/no/such/route"), 404)["type"] == "not_found"
