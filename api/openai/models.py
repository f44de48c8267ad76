"""``GET /v1/models`` and ``GET /v1/models/{id}``: the catalog (catalog.py) as OpenAI's model list, with gpuq's
fields on each model; a path both APIs have, so errors keep gpuq's shape plus OpenAI's fields."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from gpuq.api.deps import Jobs, SettingsDep, Tenant
from gpuq.api.openai import catalog
from gpuq.api.openai.errors import SharedRoute
from gpuq.api.openai.respond import json_answer

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=SharedRoute)


@router.get("")
async def list_models(tenant: Tenant, jobs: Jobs, settings: SettingsDep) -> Response:
    """Every model the caller can name: local directories, resident models, the caller's fine-tunes."""
    models = await run_in_threadpool(catalog.list_models, tenant, jobs, settings)
    return json_answer({"object": "list", "data": models})


@router.get("/{model_id:path}")
async def get_model(model_id: str, tenant: Tenant, jobs: Jobs, settings: SettingsDep) -> Response:
    """One model (404 ``model_not_found`` when the catalog does not list it)."""
    return json_answer(await run_in_threadpool(catalog.get_model, model_id, tenant, jobs, settings))
