"""``POST /v1/embeddings`` as a gpuq ``feature-extraction`` job (mean pooled, L2-normalised, as OpenAI's are).

``input`` is a string, a list of strings, or token arrays (the model's own token ids, read as given);
``dimensions`` keeps the first N components and normalises again (Matryoshka-style truncation), up to the
model's own size; ``encoding_format: base64`` packs each vector as little-endian float32, as the SDK decodes it
(and asks for by default). Batched like any feature-extraction job: concurrent calls share forward passes.
"""
from __future__ import annotations

import base64
import math
import struct
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from gpuq.api.body import Reader
from gpuq.api.deps import job_store
from gpuq.api.openai import calls, catalog
from gpuq.api.openai.errors import OpenAIRoute
from gpuq.api.openai.respond import json_answer
from gpuq.api.submission import Submitted
from gpuq.common.errors import InvalidInput
from gpuq.common.records import JobStore
from gpuq.common.schemas import JobRequest
from gpuq.common.settings import Settings, get_settings
from pydantic import BaseModel, ConfigDict, Field, field_validator

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
Inputs = str | list[str] | list[int] | list[list[int]]


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=1024)
    input: Inputs
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=512)

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Inputs) -> Inputs:
        if isinstance(value, list) and (not value or any(isinstance(v, list) and not v for v in value)):
            raise ValueError("empty input")
        return value

    @property
    def token_ids(self) -> bool:
        """Whether ``input`` holds token ids."""
        return isinstance(self.input, list) and not isinstance(self.input[0], str)

    @property
    def inputs(self) -> list[Any]:
        """The inputs as a list (one text or token array each)."""
        value = self.input
        if isinstance(value, str) or (isinstance(value, list) and isinstance(value[0], int)):
            return [value]
        return list(value)


def embedding_job(req: EmbeddingRequest, model: catalog.Resolved) -> JobRequest:
    """The feature-extraction job for an embeddings request."""
    params: dict[str, Any] = {"task": "feature-extraction", "normalize": True, "count_tokens": True}
    if req.token_ids:
        params["token_ids"] = True
    if model.adapter is not None:
        params["adapter"] = model.adapter
    return calls.job_request("inference", model.model, params, embedding_param, req.inputs)


def embedding_param(field: str) -> str:
    """The embeddings parameter a gpuq field stands for."""
    if field == "inputs" or field.startswith("inputs."):
        return "input" + field[len("inputs"):]
    return "model" if field.startswith(("model", "params.adapter")) else field.removeprefix("params.")


def embedding_list(req: EmbeddingRequest, result: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``list`` of ``embedding`` objects for a finished job."""
    data = [{"object": "embedding", "index": i, "embedding": _encoded(_sized(item["embedding"], req.dimensions),
                                                                       req.encoding_format)}
            for i, item in enumerate(result)]
    tokens = sum(int(item.get("tokens", 0)) for item in result)
    return {"object": "list", "data": data, "model": req.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _sized(vector: list[float], dimensions: int | None) -> list[float]:
    if dimensions is None or dimensions == len(vector):
        return vector
    if dimensions > len(vector):
        raise InvalidInput(f"dimensions: this model's embeddings have {len(vector)} dimensions", field="dimensions")
    kept = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in kept)) or 1.0
    return [x / norm for x in kept]


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    # struct packs a list of floats about twice as fast as array.array; the vectors are normalised, so each
    # component fits a float32.
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


_EMBEDDINGS = Reader(EmbeddingRequest, ())  # read by the route itself: generation/routes.py says why


@router.post("/embeddings", openapi_extra=_EMBEDDINGS.openapi({}))
async def embeddings(request: Request) -> Response:
    """OpenAI embeddings of each input."""
    body, tenant = await _EMBEDDINGS.call(request)
    settings = get_settings()
    done = await _accept(body, request, tenant, job_store(), settings)
    _, result = await calls.result_of(done, tenant, settings, embedding_param)
    return json_answer(embedding_list(body, result), done)


async def _accept(body: EmbeddingRequest, request: Request, tenant: str, store: JobStore,
                  settings: Settings) -> Submitted:
    model = await catalog.resolve_on_loop(body.model, tenant, store, settings)
    return await calls.accept(request, "embeddings", embedding_job(body, model), tenant, settings, embedding_param)
