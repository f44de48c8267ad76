"""One image job's generation settings, resolved from its params and the pipeline's defaults."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from gpuq.common.jobs.image import AdapterParams, ImageParams

SEED_SPACE = 2**32


@dataclass(frozen=True)
class Plan:
    """What to generate. Image ``i`` uses prompt ``i // num_images`` and seed ``seed + i``."""

    prompts: tuple[str, ...]
    negative_prompt: str | None
    steps: int
    guidance_scale: float
    width: int
    height: int
    num_images: int
    seed: int
    scheduler: str | None
    preview_every: int | None
    attention_slicing: bool
    vae_slicing: bool
    vae_tiling: bool

    @property
    def batch(self) -> int:
        return len(self.prompts) * self.num_images

    @property
    def seeds(self) -> list[int]:
        """One seed per image, so each image is reproducible from its own seed."""
        return [(self.seed + i) % SEED_SPACE for i in range(self.batch)]

    def prompt_of(self, index: int) -> str:
        return self.prompts[index // self.num_images]

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the diffusers pipeline call (generator and callbacks excepted)."""
        negative = None if self.negative_prompt is None else [self.negative_prompt] * len(self.prompts)
        return {"prompt": list(self.prompts), "negative_prompt": negative, "num_inference_steps": self.steps,
                "guidance_scale": self.guidance_scale, "width": self.width, "height": self.height,
                "num_images_per_prompt": self.num_images}

    def image_meta(self, index: int, model: str, adapter: AdapterParams | None) -> dict[str, Any]:
        """Generation parameters of image ``index`` (PNG text chunk, record, Hub card). No job id or clock:
        the same request gives the same bytes."""
        meta: dict[str, Any] = {
            "prompt": self.prompt_of(index), "negative_prompt": self.negative_prompt,
            "num_inference_steps": self.steps, "guidance_scale": self.guidance_scale, "width": self.width,
            "height": self.height, "seed": self.seeds[index], "scheduler": self.scheduler or "default",
            "model": model, "index": index,
        }
        if adapter is not None:
            meta["adapter"] = {"ref": adapter.ref, "weight": adapter.weight}
        return meta


def make_plan(params: ImageParams, default_size: tuple[int, int]) -> Plan:
    """Resolve a job's params: sizes default to the pipeline's, a missing seed is drawn (and recorded)."""
    return Plan(
        prompts=tuple(params.prompt), negative_prompt=params.negative_prompt,
        steps=params.num_inference_steps, guidance_scale=params.guidance_scale,
        width=params.width or default_size[0], height=params.height or default_size[1],
        num_images=params.num_images,
        seed=params.seed if params.seed is not None else secrets.randbelow(SEED_SPACE),
        scheduler=params.scheduler, preview_every=params.preview_every,
        attention_slicing=params.attention_slicing, vae_slicing=params.vae_slicing,
        vae_tiling=params.vae_tiling,
    )
