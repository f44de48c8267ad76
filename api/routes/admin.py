"""Operator routes (admin key): queue load for autoscalers and dashboards."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from gpuq.api.auth import require_admin
from gpuq.common.queues import queue_loads
from gpuq.common.redis_client import get_redis

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("/queues")
def queues() -> dict[str, Any]:
    """Per queue: ``waiting`` (messages on the broker), ``running`` (claimed jobs) and ``load`` (their sum).

    KEDA's metrics-api trigger reads ``queues.<queue>.load`` (ops/k8s/keda.yaml).
    """
    return {"queues": {name: load.to_dict() for name, load in queue_loads(get_redis()).items()}}
