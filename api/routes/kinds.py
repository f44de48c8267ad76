"""``GET /v1/kinds``: the job kinds this deployment runs (clients and the demo UI adapt to it)."""
from __future__ import annotations

from fastapi import APIRouter

from gpuq.api.deps import Tenant
from gpuq.common.jobs.registry import all_specs
from gpuq.common.schemas import KindInfo, KindList

router = APIRouter(prefix="/v1/kinds", tags=["jobs"])


@router.get("", response_model=KindList)
def list_kinds(_: Tenant) -> KindList:
    """Every registered job kind, by name."""
    specs = sorted(all_specs(), key=lambda s: s.kind)
    return KindList(kinds=[KindInfo(kind=s.kind, queue=s.queue, description=s.description) for s in specs])
