"""``GET /v1/models``: what this deployment can serve, in OpenAI's model-list shape (plus gpuq's fields)."""
from __future__ import annotations

from fastapi import APIRouter
from gpuq.api import catalog
from gpuq.api.deps import Jobs, SettingsDep, Tenant
from gpuq.common.catalog import ModelEntry, ModelList

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList)
def list_models(tenant: Tenant, jobs: Jobs, settings: SettingsDep) -> ModelList:
    """Models under the model roots, resident on live workers, in the HF cache, and the caller's fine-tunes."""
    return ModelList(data=catalog.list_models(settings, jobs, tenant))


@router.get("/{model_id:path}", response_model=ModelEntry)
def get_model(model_id: str, tenant: Tenant, jobs: Jobs, settings: SettingsDep) -> ModelEntry:
    """One model by id (ids may hold slashes: ``org/name``); 404 when unknown."""
    return catalog.get_model(settings, jobs, tenant, model_id)
