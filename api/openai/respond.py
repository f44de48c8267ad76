"""Answers of the OpenAI routes: JSON encoded once, with the job they came from in the headers."""
from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response
from gpuq.api.submission import Submitted


def job_headers(done: Submitted) -> dict[str, str]:
    """Where the call's job is (``/v1/jobs/{id}``), and whether an earlier attempt made it."""
    headers = {"X-Gpuq-Job-Id": done.job_id, "Location": f"/v1/jobs/{done.job_id}"}
    if done.replayed:
        headers["Idempotent-Replayed"] = "true"
    return headers


def json_answer(body: Any, done: Submitted | None = None, status: int = 200) -> Response:
    """``body`` as JSON (orjson: results of hundreds of floats encode several times faster)."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=job_headers(done) if done is not None else None)
