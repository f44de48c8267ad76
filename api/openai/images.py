"""``POST /v1/images/generations`` as a gpuq ``image`` job: ``n`` images of ``size`` (``WxH``), answered as
``b64_json`` (read from the job's PNG artifacts) or ``url`` (gpuq's artifact download, which takes the same
bearer key). gpuq's own knobs ride along in the body (the SDK's ``extra_body``): ``num_inference_steps``,
``guidance_scale``, ``negative_prompt``, ``seed``, ``scheduler``.
"""
from __future__ import annotations

import base64
import re
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from gpuq.api.body import Reader
from gpuq.api.deps import artifact_store, job_store
from gpuq.api.openai import calls, catalog
from gpuq.api.openai.errors import OpenAIRoute
from gpuq.api.openai.respond import json_answer
from gpuq.api.submission import Submitted
from gpuq.common.records import JobStore
from gpuq.common.schemas import JobRecord, JobRequest
from gpuq.common.settings import Settings, get_settings
from pydantic import BaseModel, ConfigDict, Field, field_validator

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_PARAMS = {"num_images": "n", "width": "size", "height": "size", "prompt": "prompt"}


class ImageRequest(BaseModel):
    """``POST /v1/images/generations`` (with gpuq's diffusion knobs as optional extras)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field(min_length=1)
    model: str = Field(min_length=1, max_length=1024)
    n: int = Field(1, ge=1, le=10)
    size: str | None = None
    response_format: Literal["url", "b64_json"] = "url"
    output_format: Literal["png"] | None = None
    quality: str | None = None  # accepted; steps say how hard the model works here
    style: str | None = None
    user: str | None = Field(None, max_length=512)
    num_inference_steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0, le=50)
    negative_prompt: str | None = None
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    scheduler: str | None = None

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value not in (None, "auto") and not _SIZE.match(value):
            raise ValueError("expected WIDTHxHEIGHT (e.g. 512x512) or auto")
        return None if value == "auto" else value


def image_job(req: ImageRequest, model: catalog.Resolved) -> JobRequest:
    """The image job for an images request."""
    params: dict[str, Any] = {"prompt": req.prompt, "num_images": req.n}
    if req.size:
        width, height = (int(x) for x in req.size.split("x"))
        params.update(width=width, height=height)
    extras = req.model_dump(include={"num_inference_steps", "guidance_scale", "negative_prompt", "seed",
                                     "scheduler"}, exclude_none=True)
    return calls.job_request("image", model.model, {**params, **extras}, image_param)


def image_param(field: str) -> str:
    """The images parameter a gpuq field stands for."""
    name = field.removeprefix("params.").split(".")[0]
    return _PARAMS.get(name, name)


def images_response(req: ImageRequest, record: JobRecord, result: dict[str, Any], base_url: str) -> dict[str, Any]:
    """OpenAI's images response for a finished image job."""
    data = []
    for image in result["images"]:
        if req.response_format == "b64_json":
            path = artifact_store().local_path(record.tenant, record.id, image["artifact"])
            data.append({"b64_json": base64.b64encode(path.read_bytes()).decode(), "revised_prompt": None})
        else:
            data.append({"url": base_url.rstrip("/") + image["url"], "revised_prompt": None})
    first = result["images"][0] if result["images"] else {}
    return {"created": int(record.timings.submitted_at or 0), "data": data, "output_format": "png",
            "size": f"{first.get('width')}x{first.get('height')}" if first else None}


_IMAGES = Reader(ImageRequest, ())  # read by the route itself: generation/routes.py says why


@router.post("/images/generations", openapi_extra=_IMAGES.openapi({}))
async def generate_images(request: Request) -> Response:
    """OpenAI image generation on a diffusers model."""
    body, tenant = await _IMAGES.call(request)
    settings = get_settings()
    done = await _accept(body, request, tenant, job_store(), settings)
    record, result = await calls.result_of(done, tenant, settings, image_param)
    answer = await run_in_threadpool(images_response, body, record, result, str(request.base_url))
    return json_answer(answer, done)


async def _accept(body: ImageRequest, request: Request, tenant: str, store: JobStore, settings: Settings
                  ) -> Submitted:
    model = await catalog.resolve_on_loop(body.model, tenant, store, settings)
    return await calls.accept(request, "images", image_job(body, model), tenant, settings, image_param)
