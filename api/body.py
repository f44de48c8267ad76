"""A route's JSON body and headers read as FastAPI reads them, without its per-request parameter resolution.

FastAPI resolves a route's dependencies, header parameters and body model for every request; for the submit
route that cost about a sixth of a submit's CPU (measured with the route as the only variable: 125 us with
two dependencies, two headers and a body model, 55 us reading them directly). The submit route therefore reads
them itself with these helpers, which keep FastAPI's behaviour and its 422s: the body is read and decoded as
JSON first (malformed JSON is refused before anything else), the caller is authenticated next (401 before
any field is checked), then headers and fields are validated together into one 422 naming every field, in
FastAPI's order (headers, then body). ``openapi`` documents what the signature no longer shows, and
``with_body_schemas`` adds the body models no declared parameter names to the OpenAPI components.
"""
from __future__ import annotations

import email.message
import json
from typing import Any, Generic, TypeVar, cast

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from gpuq.api.auth import tenant_for
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema

M = TypeVar("M", bound=BaseModel)
HEADER_MAX = 255  # longest Idempotency-Key / Prefer value accepted


async def json_body(request: Request) -> Any:
    """The decoded JSON body; the raw bytes for a content type that is not JSON; None when empty."""
    raw = await request.body()
    if not raw:
        return None
    content_type = request.headers.get("content-type")
    if content_type != "application/json" and not _is_json(content_type):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                                       "input": {}, "ctx": {"error": exc.msg}}], body=exc.doc) from exc
    except (RecursionError, ValueError) as exc:  # nesting too deep, not UTF-8: FastAPI's 400
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False  # FastAPI's strict content type: no header, no JSON
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


_DOCUMENTED: list[type[BaseModel]] = []  # every Reader's body model, for the OpenAPI components


class Reader(Generic[M]):
    """Validates one route's headers and body model, raising one 422 for all their errors."""

    def __init__(self, model: type[M], headers: tuple[str, ...]) -> None:
        self.model = model
        self.headers = headers
        self._adapter: TypeAdapter[Any] = TypeAdapter(model)
        _DOCUMENTED.append(model)

    async def call(self, request: Request) -> tuple[M, str]:
        """(the body, the caller's tenant) of a route without headers of its own, read in FastAPI's order."""
        raw = await json_body(request)
        tenant = tenant_for(request)
        return self.read(request, raw)[0], tenant

    def read(self, request: Request, body: Any) -> tuple[M, dict[str, str | None]]:
        """(the body as the model, each header's value or None)."""
        errors: list[dict[str, Any]] = []
        values: dict[str, str | None] = {}
        for name in self.headers:
            value = values[name] = request.headers.get(name)
            if value is not None and len(value) > HEADER_MAX:
                errors.append({"type": "string_too_long", "loc": ("header", name),
                               "msg": f"String should have at most {HEADER_MAX} characters", "input": value,
                               "ctx": {"max_length": HEADER_MAX}})
        parsed = None
        if body is None:
            errors.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
        else:
            try:
                parsed = self._adapter.validate_python(body, from_attributes=True)
            except ValidationError as exc:
                errors += [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        if errors:
            raise RequestValidationError(errors, body=body)
        return cast(M, parsed), values

    def openapi(self, about: dict[str, str]) -> dict[str, Any]:
        """``openapi_extra`` describing the body model and the headers (``about``: a header's description)."""
        params = []
        for name in self.headers:
            schema: dict[str, Any] = {"anyOf": [{"type": "string", "maxLength": HEADER_MAX}, {"type": "null"}]}
            described = {"description": about[name]} if about.get(name) else {}
            params.append({"name": name, "in": "header", "required": False,
                           "schema": {**schema, **described, "title": name}, **described})
        ref = {"$ref": f"#/components/schemas/{self.model.__name__}"}
        invalid = {"$ref": "#/components/schemas/HTTPValidationError"}
        return {**({"parameters": params} if params else {}),
                "requestBody": {"required": True, "content": {"application/json": {"schema": ref}}},
                "responses": {"422": {"description": "Validation Error",
                                      "content": {"application/json": {"schema": invalid}}}}}


def with_body_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI document with the schemas of the Readers' body models (and what they nest) in its components,
    where no declared parameter put them; those already there are kept."""
    _, top = models_json_schema([(m, "validation") for m in dict.fromkeys(_DOCUMENTED)],
                                ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, value in top.get("$defs", {}).items():
        components.setdefault(name, value)
    return schema
