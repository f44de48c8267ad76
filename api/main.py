"""The FastAPI application: thin HTTP over the job store and the queue."""
from __future__ import annotations

import logging
from typing import Any

from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpuq.api import metrics, openai
from gpuq.api.docs import install_docs
from gpuq.api.routes import admin, files, generate, health, jobs, kinds
from gpuq.common import collector
from gpuq.common.errors import GpuqError, PayloadTooLarge, ServiceUnavailable
from gpuq.common.settings import get_settings

log = logging.getLogger(__name__)


def _error_response(exc: GpuqError) -> JSONResponse:
    headers = exc.http_headers()
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = {"field": None, **exc.to_dict()}  # every answer names its field, null when none is to blame
    return JSONResponse({"error": body}, status_code=exc.status_code, headers=headers or None)


async def _gpuq_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, GpuqError)
    return _error_response(exc)


async def _redis_error(_: Request, exc: Exception) -> Response:
    log.warning("redis unavailable: %s", exc)
    return _error_response(ServiceUnavailable(f"job store unavailable: {type(exc).__name__}"))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's and FastAPI's own errors (unknown route, wrong method, a body that cannot be parsed) in
    gpuq's one error shape; their headers (``Allow`` on a 405) are kept."""
    assert isinstance(exc, StarletteHTTPException)
    status = HTTPStatus(exc.status_code)
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else status.phrase
    body_error = exc.status_code == 400 and request.method in ("POST", "PUT", "PATCH")
    if body_error and "json" in request.headers.get("content-type", ""):
        message = "not valid JSON (malformed, not UTF-8, or nested too deep)"
    error = {"type": _HTTP_TYPES.get(exc.status_code, status.phrase.lower().replace(" ", "_").replace("-", "_")),
             "message": f"body: {message}" if body_error else message, "retryable": exc.status_code >= 500,
             "field": "body" if body_error else None}
    return JSONResponse({"error": error}, status_code=exc.status_code, headers=exc.headers)


_HTTP_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


async def _unexpected_error(_: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback by Starlette; the caller still gets the one error shape."""
    log.error("unhandled %s: %s", type(exc).__name__, exc)
    error = {"type": "internal_error", "message": "internal server error", "retryable": False, "field": None}
    return JSONResponse({"error": error}, status_code=500)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    fields = [_field(e) for e in errors]
    first = errors[0] if errors else {"msg": "invalid request"}
    body: dict[str, Any] = {"error": {"type": "invalid_input", "message": f"{fields[0] if fields else 'body'}: "
                                      f"{first['msg']}", "retryable": False, "field": fields[0] if fields else None,
                                      "fields": [{"field": f, "message": e["msg"]} for f, e in zip(fields, errors)]}}
    return JSONResponse(body, status_code=422)


def _field(error: Any) -> str:
    """The dotted field of one pydantic error; a body that is not JSON at all names ``body``."""
    if error.get("type") == "json_invalid":
        return "body"
    return ".".join(str(p) for p in error["loc"] if p != "body") or "body"


class BodyLimit:
    """Reject request bodies over ``max_bytes`` with 413, whether or not Content-Length is sent.

    Paths in ``streamed`` (uploads) get their own limit and are not buffered: the body is counted as the route
    reads it, and reading past the limit raises PayloadTooLarge into the route.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, streamed: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        streamed = scope.get("path") in self.streamed
        limit = self.streamed[scope["path"]] if streamed else self.max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _error_response(self._too_large(limit))(scope, receive, send)
            return
        if streamed:
            await self.app(scope, self._counted(receive, limit), send)
            return
        # No trustworthy length: buffer the body up to the limit before the app sees any of it.
        chunks: list[bytes] = []
        seen, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            more = bool(message.get("more_body"))
            if seen > limit:
                await _error_response(self._too_large(limit))(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    def _counted(self, receive: Receive, limit: int) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise self._too_large(limit)
            return message
        return counted

    def _too_large(self, limit: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body exceeds {limit} bytes", field="body")


def create_app() -> FastAPI:
    """Build the API app."""
    settings = get_settings()
    app = FastAPI(title="gpuq", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Distributed job queue for GPU workers: submit, stream, cancel, fetch artifacts.")
    # Routes are matched in order, one regular expression each, and no two routers' paths overlap: the busiest
    # (the calls of both APIs) come first, the docs pages last.
    app.include_router(health.router)
    for family in openai.call_routers:
        app.include_router(family)
    app.include_router(jobs.router)
    for family in openai.other_routers:
        app.include_router(family)
    app.include_router(jobs.deadletter_router)
    app.include_router(kinds.router)
    app.include_router(generate.router)
    app.include_router(files.router)
    app.include_router(admin.router)
    app.include_router(metrics.router)
    install_docs(app)  # Swagger UI and ReDoc from the API itself, not a CDN
    app.add_exception_handler(GpuqError, _gpuq_error)
    app.add_exception_handler(RedisError, _redis_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes,
                       streamed={files.UPLOAD_PATH: settings.max_upload_bytes + files.MULTIPART_OVERHEAD})
    collector.tune_for_serving()  # common/collector.py says why
    return app


