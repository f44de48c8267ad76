"""Errors on the OpenAI-compatible routes, in OpenAI's shape, chosen per route by its route class.

The app's exception handlers answer in gpuq's shape; a route of class ``OpenAIRoute`` catches the error tree
(and request validation, and Redis) inside the route instead, so only these routes answer
``{"error": {"message", "type", "param", "code"}}`` with the status the openai SDK maps to its exception
classes (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 409 ConflictError, 422, 429
RateLimitError, 5xx InternalServerError). A ``SharedRoute`` (paths both APIs have: files, models) keeps gpuq's
statuses and fields and adds OpenAI's, so both clients parse the same body.

A non-retryable error carries ``x-should-retry: false``, which the SDK obeys: its default retries of 409 and
5xx would otherwise resubmit a job that already failed.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from gpuq.common.errors import GpuqError, InvalidInput, ServiceUnavailable
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
Handler = Callable[[Request], Coroutine[Any, Any, Response]]

# OpenAI's error ``type`` by status; ``code`` is the error's own code or gpuq's type name.
_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
          429: "rate_limit_error"}
_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


def openai_status(exc: GpuqError) -> int:
    """The status an OpenAI client expects: invalid input and oversized bodies are 400, the rest as gpuq's."""
    return 400 if exc.status_code in (413, 422) else exc.status_code


def error_body(exc: GpuqError, status: int, shared: bool) -> dict[str, Any]:
    """OpenAI's error object, with gpuq's fields; on a shared route gpuq's ``type`` is kept."""
    base = exc.to_dict()
    openai_type = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = exc.extra.get("code") or _CODES.get(status) or exc.type_name
    return {"error": {**base, "message": exc.message, "type": base["type"] if shared else openai_type,
                      "param": exc.field, "code": code}}


def render(exc: GpuqError, shared: bool = False) -> Response:
    """The response for ``exc`` on an OpenAI route."""
    status = exc.status_code if shared else openai_status(exc)
    headers = exc.http_headers()
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if not exc.retryable:
        headers["x-should-retry"] = "false"
    return Response(orjson.dumps(error_body(exc, status, shared)), status_code=status, headers=headers,
                    media_type="application/json")


def from_validation(exc: RequestValidationError) -> InvalidInput:
    """The first problem of a request body that does not fit its model, naming the parameter."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    param = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "header")) or None
    return InvalidInput(f"{param or 'body'}: {first['msg']}", field=param)


class OpenAIRoute(APIRoute):
    """A route whose errors answer in OpenAI's shape (see the module docstring)."""

    shared = False

    def get_route_handler(self) -> Handler:
        """The route's handler, answering the error tree, validation and Redis errors in OpenAI's shape."""
        handler = super().get_route_handler()
        shared = self.shared

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except GpuqError as exc:
                return render(exc, shared)
            except RequestValidationError as exc:
                return render(from_validation(exc), shared)
            except RedisError as exc:
                log.warning("redis unavailable: %s", exc)
                return render(ServiceUnavailable(f"job store unavailable: {type(exc).__name__}"), shared)
        return guarded


class SharedRoute(OpenAIRoute):
    """A route both APIs have: gpuq's statuses and error fields, plus OpenAI's ``param`` and ``code``."""

    shared = True
