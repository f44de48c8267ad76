"""Liveness and readiness."""
from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from gpuq.common import keys
from gpuq.common.redis_client import get_redis
from gpuq.common.settings import get_settings

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz() -> JSONResponse:
    """Ready when Redis answers and at least one worker has sent a recent heartbeat."""
    try:
        r = get_redis()
        r.ping()
        alive = r.zcount(keys.workers(), time.time() - get_settings().worker_ttl_s, "+inf")
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return JSONResponse({"status": "unavailable", "redis": f"error: {type(exc).__name__}"}, status_code=503)
    body = {"status": "ok" if alive else "no_workers", "redis": "ok", "workers": alive}
    return JSONResponse(body, status_code=200 if alive else 503)
