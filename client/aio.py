"""``AsyncClient``: the asyncio twin of ``Client`` (same methods, awaited). Keep the two in step."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Self

import httpx

from gpuq.client import _base
from gpuq.client._base import Call, RetryPolicy
from gpuq.common.catalog import ModelEntry, ModelList
from gpuq.common.errors import ServiceUnavailable, WaitTimeout
from gpuq.common.schemas import (TERMINAL_EVENTS, TERMINAL_STATUSES, ArtifactInfo, JobEvent, JobList, JobRecord,
                            KindInfo, KindList, WebhookSpec)

# Aliases, because the ``list`` method shadows the builtin inside the class.
JobRecords = list[JobRecord]
Artifacts = list[ArtifactInfo]
Kinds = list[KindInfo]
Paths = list[Path]
FileParts = Callable[[ExitStack], dict[str, Any]]


class AsyncClient:
    """Submit jobs, wait for them, stream their events, fetch artifacts.

    ``api_url``/``api_key`` default to ``GPUQ_API_URL``/``GPUQ_API_KEY``. Errors are gpuq's own error
    classes (``gpuq.common.errors``: ``NotFound``, ``InvalidInput``, ``RateLimited`` ...).
    """

    def __init__(self, api_url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.api_url = _base.api_url(api_url)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.api_url, headers=_base.headers(_base.api_key(api_key)),
                                  timeout=timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- jobs ----------------------------------------------------------------------------------------
    async def submit(self, kind: str, model: str, inputs: Any = None, params: dict[str, Any] | None = None,
               *,
               priority: str = "normal", webhook: WebhookSpec | dict[str, Any] | None = None,
               idempotency_key: str | None = None, wait: float | None = None) -> JobRecord:
        """Submit a job; with ``wait`` (seconds) the answer is the finished job if it ends in time."""
        call = _base.submit_call(kind, model, inputs, params, priority, webhook, idempotency_key, wait)
        return _base.record(await self._send(call))

    async def submit_many(self, jobs: Sequence[dict[str, Any]], *, idempotency_key: str | None = None,
                    wait: float | None = None) -> JobRecords:
        """Submit many jobs in one request (``POST /v1/jobs/batch``): each a dict with ``kind``, ``model`` and
        optionally ``inputs``, ``params``, ``priority``, ``webhook``. All or none are accepted; with ``wait``
        the answer holds the finished jobs if all end in time. Records come back in the order given."""
        call = _base.submit_many_call([dict(j) for j in jobs], idempotency_key, wait)
        resp = await self._send(call)
        return JobList.model_validate(resp.json()).jobs

    async def get(self, job_id: str, *, wait: float | None = None) -> JobRecord:
        """The job's record; ``wait`` long-polls up to that many seconds for it to finish."""
        params = {"wait": wait} if wait else None
        call = Call("GET", f"/v1/jobs/{job_id}", params, timeout=(wait or 0) + 30)
        return _base.record(await self._send(call))

    async def list(self, *, status: str | None = None, kind: str | None = None,
             limit: int = 50) -> JobRecords:
        """The caller's jobs, newest first."""
        params = {k: v for k, v in {"status": status, "kind": kind, "limit": limit}.items() if v is not None}
        resp = await self._send(Call("GET", "/v1/jobs", params))
        return JobList.model_validate(resp.json()).jobs

    async def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Block until the job finishes (long-polls, no hammering); WaitTimeout after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _base.LONG_POLL_S if deadline is None else deadline - time.monotonic()
            job = await self.get(job_id, wait=max(min(left, _base.LONG_POLL_S), 0.001))
            if job.status in TERMINAL_STATUSES:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} still {job.status} after {timeout:g} s", job_id=job_id)

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel: a queued job never runs, a running one stops at its next progress point."""
        return _base.record(await self._send(Call("POST", f"/v1/jobs/{job_id}/cancel")))

    async def events(self, job_id: str, *, last_event_id: str | None = None,
                     follow: bool = True) -> AsyncIterator[JobEvent]:
        """The job's events, oldest first, until its terminal one; reconnects with Last-Event-ID if cut."""
        last, failures = last_event_id, 0
        while True:
            hdrs = {"Last-Event-ID": last} if last else {}
            params = None if follow else {"follow": "false"}
            try:
                async with self._http.stream("GET", f"/v1/jobs/{job_id}/events", headers=hdrs, params=params,
                                       timeout=httpx.Timeout(self.timeout, read=60.0)) as resp:
                    if resp.status_code != 200:
                        await resp.aread()
                        raise _base.error_for(resp)
                    parser = _base.SSEParser()
                    async for line in resp.aiter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            last, failures = event.id, 0
                            yield event
                            if event.type in TERMINAL_EVENTS:
                                return
                if not follow:
                    return
            except (*_base.TRANSIENT, ServiceUnavailable) as exc:
                if failures >= self.retry.attempts:
                    raise ServiceUnavailable(f"event stream of job {job_id} kept failing: {exc}") from exc
            failures += 1
            await asyncio.sleep(self.retry.delay(failures))

    async def kinds(self) -> Kinds:
        """The job kinds this deployment runs."""
        resp = await self._send(Call("GET", "/v1/kinds"))
        return KindList.model_validate(resp.json()).kinds

    async def models(self) -> list[ModelEntry]:
        """The models this deployment can serve (``GET /v1/models``): ids usable as a job's ``model``."""
        resp = await self._send(Call("GET", "/v1/models"))
        return ModelList.model_validate(resp.json()).data

    async def generate(self, prompt: str) -> str:
        """Text from ``GET /generate`` (the deployment's default text-generation model)."""
        resp = await self._send(Call("GET", "/generate", {"prompt": prompt}, timeout=_base.LONG_POLL_S + 30))
        return str(resp.json()["result"])

    # --- files -----------------------------------------------------------------------------------------
    async def upload_file(self, path: str | Path, *, name: str | None = None,
                    content_type: str = "application/octet-stream") -> dict[str, Any]:
        """Upload a file (``POST /v1/files``, multipart field ``file``); returns the server's description."""
        path = Path(path)

        def files(stack: ExitStack) -> dict[str, Any]:
            return {"file": (name or path.name, stack.enter_context(path.open("rb")), content_type)}
        return _base.as_dict(await self._send(Call("POST", "/v1/files", idempotent=False), files))

    async def list_files(self) -> list[dict[str, Any]]:
        """The caller's uploaded files, newest first (``GET /v1/files``: an OpenAI list page, or a bare list
        from an older server)."""
        return _base.listed(await self._send(Call("GET", "/v1/files")))

    async def artifacts(self, job_id: str) -> Artifacts:
        """The job's artifacts (name, size, sha256)."""
        resp = await self._send(Call("GET", f"/v1/jobs/{job_id}/artifacts"))
        return [ArtifactInfo.model_validate(a) for a in resp.json()]

    async def download_artifact(self, job_id: str, name: str, dest: str | Path, *,
                          sha256: str | None = None) -> Path:
        """Stream one artifact to ``dest`` (a file path, or an existing directory to put ``name`` in)."""
        target = _base.target_path(Path(dest), name)
        tmp = target.with_name(f".{target.name}.part")
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}") as resp:
                    if resp.is_success:
                        digest = await _base.awrite_stream(resp.aiter_bytes(), tmp)
                        return _base.finish_download(tmp, target, name, digest, sha256)
                    await resp.aread()
                    if not self.retry.should_retry(attempt, resp.status_code, True):
                        raise _base.error_for(resp)
                    delay = self.retry.delay(attempt, _base.retry_after(resp))
            except _base.TRANSIENT as exc:
                if not self.retry.should_retry(attempt, None, True):
                    raise ServiceUnavailable(f"cannot download {name!r}: {exc}") from exc
                delay = self.retry.delay(attempt)
            await asyncio.sleep(delay)

    async def download_artifacts(self, job_id: str, dest_dir: str | Path,
                           names: Sequence[str] | None = None) -> Paths:
        """Download the job's artifacts (all, or ``names``) into ``dest_dir``, checking each sha256."""
        infos = [a for a in await self.artifacts(job_id) if names is None or a.name in names]
        return [await self.download_artifact(job_id, a.name, Path(dest_dir) / a.name, sha256=a.sha256)
                for a in infos]

    # --- transport ---------------------------------------------------------------------------------------
    async def _send(self, call: Call, files: FileParts | None = None) -> httpx.Response:
        """One API call with the retry policy applied; raises gpuq's error for a final failure."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with ExitStack() as stack:
                    extra: dict[str, Any] = {"files": files(stack)} if files else {}
                    resp = await self._http.request(call.method, call.path, params=call.params,
                                              json=call.json, headers=call.headers,
                                              timeout=call.timeout or self.timeout, **extra)
            except _base.TRANSIENT as exc:
                if not self.retry.should_retry(attempt, None, call.idempotent):
                    raise ServiceUnavailable(f"cannot reach the gpuq API at {self.api_url}: {exc}") from exc
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            if resp.is_success:
                return resp
            if not self.retry.should_retry(attempt, resp.status_code, call.idempotent):
                raise _base.error_for(resp)
            await asyncio.sleep(self.retry.delay(attempt, _base.retry_after(resp)))
