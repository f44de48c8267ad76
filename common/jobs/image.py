"""The ``image`` job kind: text-to-image with diffusers on a resident pipeline.

Params are checked here, in the API, against the deployment's bounds (size, steps, images, prompt length), so
a bad request is a 422 naming the field and never reaches a GPU. A LoRA ``adapter`` is a Hub repo id, a
directory under GPUQ_MODEL_ROOTS, or ``job:<job_id>[/<folder>]``: weights another job of the same tenant left
among its artifacts (a fine-tune, say).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.hubpush import PushToHub, prepare_push
from gpuq.common.jobs.modelref import check_model_ref
from gpuq.common.jobs.registry import JobSpec, Submitter, Validated, register, stored_variant
from gpuq.common.refs import Revision, check_chars, resolve_model
from gpuq.common.settings import Settings
from gpuq.common.storage import get_store, safe_name

# Names callers choose from; worker/diffusion/schedulers.py maps each to a diffusers scheduler class.
SCHEDULERS = ("ddim", "ddpm", "pndm", "lms", "euler", "euler_a", "heun", "kdpm2", "dpmpp_2m",
              "dpmpp_2m_karras", "dpmpp_sde", "deis", "unipc")
SchedulerName = Literal["ddim", "ddpm", "pndm", "lms", "euler", "euler_a", "heun", "kdpm2", "dpmpp_2m",
                        "dpmpp_2m_karras", "dpmpp_sde", "deis", "unipc"]
Side = Annotated[int, Field(ge=64, multiple_of=8)]
WeightName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.safetensors$")]
JOB_REF_PREFIX = "job:"
# The file diffusers' save_lora_weights writes; preferred when a folder holds several weight files.
LORA_WEIGHT_FILE = "pytorch_lora_weights.safetensors"
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"


class AdapterParams(BaseModel):
    """A LoRA to apply on top of the base pipeline, and how strongly."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    ref: str = Field(min_length=1, max_length=1024)
    weight: float = Field(1.0, ge=-4, le=4)
    weight_name: WeightName | None = None
    revision: Revision | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_ref(cls, value: object) -> object:
        return {"ref": value} if isinstance(value, str) else value


class ImagePushToHub(PushToHub):
    """``push_to_hub`` for images: optionally into a folder of the repo."""

    path_in_repo: str | None = Field(None, pattern=rf"^{_SEGMENT}(/{_SEGMENT}){{0,7}}$")


class ImageParams(BaseModel):
    """Text-to-image params; ``prompt`` may be one string or a list (each gets ``num_images`` images)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: list[str] = Field(min_length=1)
    negative_prompt: str | None = None
    num_inference_steps: int = Field(30, ge=1)
    guidance_scale: float = Field(7.5, ge=0, le=50)
    width: Side | None = None
    height: Side | None = None
    num_images: int = Field(1, ge=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    scheduler: SchedulerName | None = None
    attention_slicing: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool = False
    preview_every: int | None = Field(None, ge=1)
    adapter: AdapterParams | None = None
    push_to_hub: ImagePushToHub | None = None
    revision: Revision | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: list[str]) -> list[str]:
        if any(not p.strip() for p in value):
            raise ValueError("empty prompt")
        return value


# The record's form of the adapter (``_check_adapter``): where its weights are, found at submit.
StoredAdapterParams = stored_variant(AdapterParams, "StoredAdapterParams", source=(str | None, None),
                                     job_id=(str | None, None), artifact=(str | None, None))
StoredImagePushToHub = stored_variant(ImagePushToHub, "StoredImagePushToHub", sealed_token=(str | None, None))
StoredImageParams = stored_variant(ImageParams, "StoredImageParams",
                                   adapter=(StoredAdapterParams | None, None),
                                   push_to_hub=(StoredImagePushToHub | None, None))


def _bounds(p: ImageParams, settings: Settings) -> None:
    limits = [("width", p.width, settings.image_max_width), ("height", p.height, settings.image_max_height),
              ("num_inference_steps", p.num_inference_steps, settings.image_max_steps),
              ("num_images", len(p.prompt) * p.num_images, settings.image_max_images)]
    for name, value, limit in limits:
        if value is not None and value > limit:
            what = "prompts x num_images" if name == "num_images" else name
            raise InvalidInput(f"params.{name}: {what} is {value}, at most {limit} on this deployment",
                               field=f"params.{name}")
    texts = [("prompt", t) for t in p.prompt] + [("negative_prompt", p.negative_prompt or "")]
    for name, text in texts:
        if len(text) > settings.image_max_prompt_chars:
            raise InvalidInput(f"params.{name}: longer than {settings.image_max_prompt_chars} characters",
                               field=f"params.{name}")
    if p.cpu_offload and not settings.image_allow_cpu_offload:
        raise InvalidInput("params.cpu_offload: CPU offload is not enabled on this deployment "
                           "(GPUQ_IMAGE_ALLOW_CPU_OFFLOAD)", field="params.cpu_offload")


def pick_weight_file(names: list[str], weight_name: str | None, folder: str = "") -> str | None:
    """The LoRA weight file among ``names`` (paths) inside ``folder``: the named one, the diffusers default,
    or the only ``.safetensors`` there. None when that is ambiguous or absent."""
    prefix = f"{folder}/" if folder else ""
    inside = [n for n in names if n.startswith(prefix) and "/" not in n[len(prefix):]]
    if weight_name is not None:
        return prefix + weight_name if prefix + weight_name in inside else None
    weights = [n for n in inside if n.endswith(".safetensors")]
    preferred = [n for n in weights if n == prefix + LORA_WEIGHT_FILE]
    return (preferred or weights)[0] if len(preferred or weights) == 1 else None


def split_job_ref(ref: str) -> tuple[str, str]:
    """``job:<id>[/<folder>]`` -> (job id, folder); 422 on a malformed reference."""
    rest = ref[len(JOB_REF_PREFIX):]
    job_id, _, folder = rest.partition("/")
    try:
        safe_name(rest)
    except InvalidInput:
        raise InvalidInput("params.adapter.ref: expected job:<job_id>[/<folder>]",
                           field="params.adapter.ref") from None
    return job_id, folder


def _check_adapter(adapter: AdapterParams, who: Submitter) -> dict[str, Any]:
    out = adapter.model_dump(exclude_none=True)
    field = "params.adapter.ref"
    check_chars(adapter.ref, field)
    if adapter.ref.startswith(JOB_REF_PREFIX):
        job_id, folder = split_job_ref(adapter.ref)
        # Artifacts are stored per tenant, so another tenant's job simply has none here (no existence leak).
        names = [a.name for a in get_store(who.settings.artifact_dir).list(who.tenant, job_id)]
        artifact = pick_weight_file(names, adapter.weight_name, folder)
        if artifact is None:
            raise InvalidInput(f"{field}: no single LoRA .safetensors file in that job's artifacts "
                               "(name it with params.adapter.weight_name)", field=field)
        out.update(source="job", job_id=job_id, artifact=artifact)
    else:
        found = resolve_model(adapter.ref, who.settings, field)
        out.update(ref=found.value, source=found.source)
    return out


def check(model: str, inputs: Any, parsed: Any, who: Submitter) -> Validated:
    """Validate an image request beyond its params' types: deployment bounds, model, adapter, Hub push."""
    params: ImageParams = parsed
    if inputs is not None:
        raise InvalidInput("inputs: image jobs take their text in params.prompt; leave inputs out",
                           field="inputs")
    _bounds(params, who.settings)
    ref = check_model_ref(model, who.settings)
    out = params.model_dump(exclude_none=True, exclude={"adapter", "push_to_hub"})
    if params.adapter is not None:
        out["adapter"] = _check_adapter(params.adapter, who)
    push = prepare_push(params.push_to_hub, who)
    if push is not None:
        out["push_to_hub"] = push
    return Validated(model=ref, inputs=None, params=out)


SPEC = register(JobSpec(
    kind="image",
    queue="image",
    params_model=ImageParams,
    check=check,
    stored_model=StoredImageParams,
    time_limit_s=1800,
    description="Text-to-image with diffusers: per-step progress, previews, LoRA, PNG artifacts, Hub push.",
))
