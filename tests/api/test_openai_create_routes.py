"""The OpenAI create routes read their body and caller themselves: every refused request is answered as the same
route declared with FastAPI's body model and tenant dependency answers it (OpenAI's error shape, status and
``param`` alike), and their operations and body schemas are documented as before."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from fastapi.testclient import TestClient
from pydantic import BaseModel

from gpuq.api.deps import Tenant
from gpuq.api.main import create_app
from gpuq.api.openai.embeddings import EmbeddingRequest
from gpuq.api.openai.errors import OpenAIRoute
from gpuq.api.openai.generation.requests import ChatCompletionRequest, CompletionRequest
from gpuq.api.openai.images import ImageRequest
from tests.conftest import KEY_A

ROUTES: dict[str, type[BaseModel]] = {"/v1/chat/completions": ChatCompletionRequest,
                                      "/v1/completions": CompletionRequest, "/v1/embeddings": EmbeddingRequest,
                                      "/v1/images/generations": ImageRequest}
JSON = {"Content-Type": "application/json"}
AUTH = {"Authorization": f"Bearer {KEY_A}"}
CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("malformed JSON", b"{not json", {**AUTH, **JSON}),
    ("malformed JSON, no key", b"{not json", JSON),
    ("empty body", b"", {**AUTH, **JSON}),
    ("no content type", b'{"model":"m"}', AUTH),
    ("not an object", b'"just a string"', {**AUTH, **JSON}),
    ("unsupported parameter", b'{"model":"m","prompt":"p","messages":[],"input":"x","frequency_penalty":1}',
     {**AUTH, **JSON}),
    ("missing fields", b"{}", {**AUTH, **JSON}),
    ("missing fields, no key", b"{}", JSON),
    ("wrong key", b'{"model":"m"}', {"Authorization": "Bearer nope", **JSON}),
    ("nested too deep", b"[" * 200_000, {**AUTH, **JSON}),
]


def _declared(path: str, model: type[BaseModel]) -> APIRouter:
    router = APIRouter(route_class=OpenAIRoute)

    async def create(body: BaseModel, tenant: Tenant) -> Response:
        return Response(b"{}", status_code=299)
    create.__annotations__ = {"body": model, "tenant": Tenant, "return": Response}  # each route's own model
    router.add_api_route(path, create, methods=["POST"], name=path.strip("/").replace("/", "_") + "_post")
    return router


@pytest.fixture(scope="module")
def reference() -> Iterator[TestClient]:
    """The create routes as FastAPI declares them, answering only what they refuse, with the API's handlers."""
    app = FastAPI()
    for error, handler in create_app().exception_handlers.items():
        app.add_exception_handler(error, handler)
    for path, model in ROUTES.items():
        app.include_router(_declared(path, model))
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize("path", list(ROUTES))
@pytest.mark.parametrize(("name", "body", "headers"), CASES, ids=[c[0] for c in CASES])
def test_a_refused_call_is_answered_as_fastapi_would(reference: TestClient, api_url: str, path: str, name: str,
                                                     body: bytes, headers: dict[str, str]) -> None:
    expected = reference.post(path, content=body, headers=headers)
    assert expected.status_code != 299
    got = httpx.post(f"{api_url}{path}", content=body, headers=headers, timeout=30)
    assert (got.status_code, got.json()) == (expected.status_code, expected.json())
    assert got.headers.get("x-should-retry") == expected.headers.get("x-should-retry")


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_the_create_operations_and_their_bodies_are_documented() -> None:
    ours = create_app().openapi()
    schemas = ours["components"]["schemas"]
    assert all(ref.removeprefix("#/components/schemas/") in schemas for ref in _refs(ours))
    for path, model in ROUTES.items():
        operation = ours["paths"][path]["post"]
        assert operation["requestBody"] == {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
        assert "parameters" not in operation and "422" in operation["responses"]
        assert set(schemas[model.__name__]["properties"]) == set(model.model_fields)
