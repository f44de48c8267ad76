"""The models this deployment serves, as OpenAI's model list with gpuq's fields, and what a model id names.

``list_models`` is the one listing function: directories under ``GPUQ_MODEL_ROOTS`` (by root-relative name),
models resident on live workers (with the workers), and the tenant's finished fine-tunes as ``ft:`` ids. A
catalog module of its own (Hub cache included) replaces it by being called from here.

Entries carry the fields of the catalog's ``ModelEntry`` (``source`` root / resident / fine-tune, ``path``,
``model_root``, ``resident_on``, ``parent``, ``job_id``), so gpuq's client parses them either way.

``resolve`` turns an OpenAI ``model`` into a gpuq model reference: a root-relative name into its directory, an
``ft:<base>:<tenant>:<job id>`` id into its base model plus the fine-tune's adapter (usable at once in
chat/completions), anything else as the native API takes it. An unknown model is 404 ``model_not_found``.
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from gpuq.api import catalog
from gpuq.common import keys
from gpuq.common.errors import InvalidInput, NotFound
from gpuq.common.records import JobStore
from gpuq.common.redis_client import loop_redis
from gpuq.common.refs.models import catalog_name, resolve_model
from gpuq.common.settings import Settings

FT_PREFIX = "ft:"
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_MARKERS = ("config.json", "model_index.json", "adapter_config.json")


@dataclass(frozen=True)
class Resolved:
    """An OpenAI model id as gpuq runs it."""

    id: str  # as the caller named it, echoed in answers
    model: str  # the gpuq model reference
    adapter: dict[str, Any] | None = None  # a fine-tune's adapter on ``model``


def not_found(model_id: str) -> NotFound:
    """404 for a model this deployment does not serve."""
    return NotFound(f"model {model_id!r} not found (GET /v1/models lists what this deployment serves)",
                    field="model", code="model_not_found")


def resolve(model_id: str, tenant: str, jobs: JobStore, settings: Settings) -> Resolved:
    """The gpuq model reference (and adapter) an OpenAI ``model`` names; 404 when it names none.

    A name is decided by the one resolver (``gpuq.common.refs``): a directory under the model roots by its
    root-relative name or absolute path, else a Hub id (allowed unless ``GPUQ_OPENAI_HUB_MODELS`` is off and
    no live worker holds it)."""
    if model_id.startswith(FT_PREFIX):
        job_id = _job_of(model_id)
        return _finetune(model_id, tenant, jobs.get_raw(job_id) if job_id else None)
    found = _offline(model_id, settings)
    if found is not None:
        return found
    if model_id in resident(jobs):
        return Resolved(model_id, resolve_model(model_id, settings).value)
    raise not_found(model_id)


async def resolve_on_loop(model_id: str, tenant: str, jobs: JobStore, settings: Settings) -> Resolved:
    """``resolve`` for a route on the event loop: a fine-tune's record read on the loop's client, the live
    workers' resident models (only with ``GPUQ_OPENAI_HUB_MODELS`` off) in a thread, the rest without Redis."""
    if model_id.startswith(FT_PREFIX):
        job_id = _job_of(model_id)
        raw = cast(dict[str, str], await loop_redis().hgetall(keys.job(job_id))) if job_id else None
        return _finetune(model_id, tenant, raw)
    found = _offline(model_id, settings)
    return found if found is not None else await asyncio.to_thread(resolve, model_id, tenant, jobs, settings)


def _offline(model_id: str, settings: Settings) -> Resolved | None:
    """What a plain model id names when no live worker needs asking; 404 when it names nothing at all."""
    try:
        ref = resolve_model(model_id, settings)
    except InvalidInput:
        raise not_found(model_id) from None
    return Resolved(model_id, ref.value) if ref.is_local or settings.openai_hub_models else None


def display_id(model: str, settings: Settings) -> str:
    """A model reference as the catalog names it: its name under the roots when it lies under one."""
    return catalog_name(model, settings) or model if Path(model).is_absolute() else model


def finetune_id(base: str, tenant: str, job_id: str, settings: Settings) -> str:
    """The ``ft:<base>:<tenant>:<job id>`` model id of a finished fine-tune (the catalog's, as OpenAI's
    ``ft:<base>:<owner>:...:<id>``; the job id last, which is all ``resolve`` reads)."""
    return f"{FT_PREFIX}{display_id(base, settings)}:{tenant}:{job_id}"


def _job_of(model_id: str) -> str | None:
    """The job id an ``ft:`` model id ends with, when it is one."""
    job_id = model_id.rsplit(":", 1)[-1]
    return job_id if _JOB_ID.match(job_id) else None


def _finetune(model_id: str, tenant: str, raw: dict[str, Any] | None) -> Resolved:
    """The base model and adapter of a fine-tune's record (as stored); 404 unless the tenant's and succeeded."""
    if not raw or raw.get("tenant") != tenant or raw.get("kind") != "finetune" or raw.get("status") != "succeeded":
        raise not_found(model_id)
    return Resolved(model_id, str(raw["model"]), {"job": str(_job_of(model_id))})


def list_models(tenant: str, jobs: JobStore, settings: Settings) -> list[dict[str, Any]]:
    """Every model the tenant can name, as the catalog lists it (``gpuq.api.catalog``: roots, resident models,
    the HF cache, the tenant's fine-tunes), as OpenAI's model objects with gpuq's fields."""
    return [entry.model_dump(mode="json") for entry in catalog.list_models(settings, jobs, tenant)]


def get_model(model_id: str, tenant: str, jobs: JobStore, settings: Settings) -> dict[str, Any]:
    """One model object; 404 ``model_not_found`` when the catalog does not list it."""
    try:
        return catalog.get_model(settings, jobs, tenant, model_id).model_dump(mode="json")
    except NotFound:
        raise not_found(model_id) from None


def resident(jobs: JobStore) -> dict[str, list[str]]:
    """Model references resident on live workers -> the workers holding them."""
    return catalog.resident_models(jobs.r)
