"""What the sync and asyncio clients share: configuration, requests, retry policy, errors, SSE parsing.

Everything here is free of I/O, so ``Client`` and ``AsyncClient`` differ only in how they send.
"""
from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gpuq.common import errors
from gpuq.common.schemas import JobEvent, JobRecord, WebhookSpec
from gpuq.common.settings import client_settings

DEFAULT_API_URL = "http://127.0.0.1:8000"
# Longest single long-poll the client asks for; the server caps it further (GPUQ_SYNC_WAIT_MAX_S).
LONG_POLL_S = 60.0
# Connection problems worth retrying: the request may not have reached the server, or its answer was lost.
TRANSIENT = (httpx.TransportError,)


def api_url(value: str | None) -> str:
    """The API base URL: the argument, else ``GPUQ_API_URL``, else the local default."""
    return (value or client_settings().api_url or DEFAULT_API_URL).rstrip("/")


def api_key(value: str | None) -> str | None:
    """The API key: the argument, else ``GPUQ_API_KEY``."""
    return value or client_settings().api_key or None


def headers(key: str | None) -> dict[str, str]:
    """Default headers for every request."""
    out = {"User-Agent": "gpuq-client/0.1", "Accept": "application/json"}
    if key:
        out["Authorization"] = f"Bearer {key}"
    return out


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    503 (the queue or its store is briefly down) is retried for every call: gpuq accepts nothing it
    answered 503 to. Connection errors are retried only for idempotent calls (reads, cancel, and submits,
    which always carry an idempotency key). 429 is retried only with ``retry_rate_limited``.
    """

    attempts: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    retry_rate_limited: bool = False

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before attempt ``attempt + 1``: the server's Retry-After, else backoff with jitter."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max_s * 6)
        full = min(self.backoff_max_s, self.backoff_s * 2.0 ** (attempt - 1))
        return full / 2 + random.uniform(0, full / 2)

    def should_retry(self, attempt: int, status: int | None, idempotent: bool) -> bool:
        """Whether a failed attempt (``status`` None for a connection error) is tried again."""
        if attempt >= self.attempts:
            return False
        if status is None:
            return idempotent
        return status == 503 or (status == 429 and self.retry_rate_limited)


@dataclass
class Call:
    """One API request, described independently of the HTTP client that sends it."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool = True
    timeout: float | None = None


def submit_call(kind: str, model: str, inputs: Any, params: dict[str, Any] | None, priority: str,
                webhook: WebhookSpec | dict[str, Any] | None, idempotency_key: str | None,
                wait: float | None) -> Call:
    """``POST /v1/jobs`` with an idempotency key (a fresh uuid4 unless given), so retries never duplicate."""
    body: dict[str, Any] = {"kind": kind, "model": model, "inputs": inputs, "params": params or {},
                            "priority": priority}
    if webhook is not None:
        body["webhook"] = webhook.model_dump() if isinstance(webhook, WebhookSpec) else webhook
    hdrs = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
    if wait is not None:
        hdrs["Prefer"] = f"wait={wait:g}"
    return Call("POST", "/v1/jobs", json=body, headers=hdrs, timeout=(wait or 0) + 30)


def submit_many_call(jobs: list[dict[str, Any]], idempotency_key: str | None, wait: float | None) -> Call:
    """``POST /v1/jobs/batch`` (each job a dict like ``submit``'s arguments), idempotent like ``submit_call``."""
    hdrs = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
    if wait is not None:
        hdrs["Prefer"] = f"wait={wait:g}"
    return Call("POST", "/v1/jobs/batch", json={"jobs": jobs}, headers=hdrs, timeout=(wait or 0) + 60)


def retry_after(resp: httpx.Response) -> float | None:
    """The Retry-After header in seconds, if the server sent one."""
    try:
        return float(str(resp.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


_BY_TYPE: dict[str, type[errors.GpuqError]] = {}
_BY_STATUS: dict[int, type[errors.GpuqError]] = {}


def _index(cls: type[errors.GpuqError]) -> None:
    for sub in cls.__subclasses__():
        if not sub.__name__.startswith("_"):
            _BY_TYPE.setdefault(sub.type_name, sub)
            _BY_STATUS.setdefault(sub.status_code, sub)
        _index(sub)


_index(errors.GpuqError)


def error_for(resp: httpx.Response) -> errors.GpuqError:
    """The gpuq error (same tree as the server's) that an error response stands for."""
    try:
        info = resp.json()["error"]
    except (ValueError, KeyError, TypeError):
        info = {"type": "", "message": f"HTTP {resp.status_code}: {resp.text[:300]}"}
    cls = _BY_TYPE.get(info.get("type", "")) or _BY_STATUS.get(resp.status_code, errors.GpuqError)
    message = str(info.get("message") or f"HTTP {resp.status_code}")
    if cls is errors.RateLimited:
        exc: errors.GpuqError = errors.RateLimited(message, retry_after_s=retry_after(resp) or 1.0,
                                                   field=info.get("field"))
    else:
        exc = cls(message, field=info.get("field"), job_id=info.get("job_id"))
    exc.http_status = resp.status_code  # type: ignore[attr-defined]
    return exc


def record(resp: httpx.Response) -> JobRecord:
    """The typed job record in a response."""
    return JobRecord.model_validate(resp.json())


class SSEParser:
    """Incremental Server-Sent Events parser: feed lines, get a JobEvent at each blank line."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._event: str | None = None
        self._data: list[str] = []
        self.retry_ms: int | None = None

    def feed(self, line: str) -> JobEvent | None:
        """Consume one line (without its newline)."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> JobEvent | None:
        event_id, type_, data = self._id, self._event, "\n".join(self._data)
        self._id, self._event, self._data = None, None, []
        if not type_ or event_id is None:
            return None
        return JobEvent.model_validate({"id": event_id, "type": type_, "data": _json(data)})


def _json(text: str) -> Any:
    return json.loads(text) if text else {}


def as_dict(resp: httpx.Response) -> dict[str, Any]:
    """A JSON object body."""
    body = resp.json()
    return body if isinstance(body, dict) else {"value": body}


def listed(resp: httpx.Response) -> list[dict[str, Any]]:
    """The items of a list answer: an OpenAI-style page (``{"object": "list", "data": [...]}``) or a bare array."""
    body = resp.json()
    items = body.get("data", []) if isinstance(body, dict) else body
    return [item for item in items if isinstance(item, dict)]


def target_path(dest: Path, name: str) -> Path:
    """Where a download lands: inside ``dest`` when it is a directory, else ``dest`` itself."""
    target = dest / name if dest.is_dir() else dest
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def write_stream(chunks: Iterable[bytes], tmp: Path) -> str:
    """Write chunks to ``tmp``; returns their sha256."""
    digest = hashlib.sha256()
    with tmp.open("wb") as fh:
        for chunk in chunks:
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()


def finish_download(tmp: Path, target: Path, name: str, digest: str, expected: str | None) -> Path:
    """Move a complete download into place, refusing one whose digest does not match."""
    if expected and digest != expected:
        tmp.unlink(missing_ok=True)
        raise errors.ServiceUnavailable(f"artifact {name!r} arrived corrupted (sha256 mismatch); try again")
    tmp.replace(target)
    return target


async def awrite_stream(chunks: AsyncIterable[bytes], tmp: Path) -> str:
    """Async twin of ``write_stream``."""
    digest = hashlib.sha256()
    with tmp.open("wb") as fh:
        async for chunk in chunks:
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()
