"""A diffusers text-to-image pipeline kept resident in the worker, and its per-job configuration."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuq.common.errors import ModelLoadError
from gpuq.common.refs import resolve_model
from gpuq.common.settings import Settings, get_settings
from gpuq.worker.device import device, torch_dtype
from gpuq.worker.diffusion.adapters import AdapterCache
from gpuq.worker.diffusion.plan import Plan
from gpuq.worker.diffusion.schedulers import make_scheduler

log = logging.getLogger(__name__)
TASK = "text-to-image"


@dataclass
class ResidentPipeline:
    """The loaded pipeline plus what jobs must not leak into each other: scheduler, switches, adapters."""

    pipe: Any
    base_scheduler: Any
    adapters: AdapterCache
    offloaded: bool = False
    switches: dict[str, bool] = field(default_factory=dict)

    def default_size(self) -> tuple[int, int]:
        """(width, height) the pipeline generates when the job names none."""
        unet = getattr(self.pipe, "unet", None) or getattr(self.pipe, "transformer", None)
        sample = getattr(getattr(unet, "config", None), "sample_size", None) or 64
        scale = int(getattr(self.pipe, "vae_scale_factor", 8))
        side = int(sample if isinstance(sample, int) else sample[0]) * scale
        return side, side

    def configure(self, plan: Plan) -> None:
        """Set this job's scheduler and memory switches (every job states them, none inherits them)."""
        self.pipe.scheduler = make_scheduler(plan.scheduler, self.base_scheduler)
        self._switch("attention_slicing", plan.attention_slicing, self.pipe.enable_attention_slicing,
                     self.pipe.disable_attention_slicing)
        vae = getattr(self.pipe, "vae", None)
        if vae is not None and hasattr(vae, "enable_slicing"):
            self._switch("vae_slicing", plan.vae_slicing, vae.enable_slicing, vae.disable_slicing)
            self._switch("vae_tiling", plan.vae_tiling, vae.enable_tiling, vae.disable_tiling)

    def _switch(self, name: str, on: bool, enable: Any, disable: Any) -> None:
        # Toggled only on change: disabling attention slicing re-installs default attention processors.
        if self.switches.get(name, False) != on:
            (enable if on else disable)()
            self.switches[name] = on

    def generate(self, plan: Plan, on_step: Any) -> tuple[list[Any], list[bool] | None]:
        """Run the denoising loop; (PIL images, NSFW flags when the pipeline has a safety checker)."""
        import torch

        gen_device = "cpu" if self.offloaded else device()
        generators = [torch.Generator(gen_device).manual_seed(s) for s in plan.seeds]
        out = self.pipe(**plan.pipeline_kwargs(), generator=generators, callback_on_step_end=on_step,
                        callback_on_step_end_tensor_inputs=["latents"], output_type="pil")
        nsfw = getattr(out, "nsfw_content_detected", None)
        return list(out.images), (list(nsfw) if nsfw is not None else None)


def loader(model: str, revision: str | None, dtype: str, offload: bool, settings: Settings,
           token: str | None) -> Any:
    """A loader for the resident cache: the pipeline on this worker's device (or CPU-offloaded)."""
    def load() -> ResidentPipeline:
        from diffusers import AutoPipelineForText2Image
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()  # tqdm bars would land in the worker log as warnings
        folder = pipeline_dir(model, revision, token)
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(  # type: ignore[no-untyped-call]
                str(folder), dtype=torch_dtype(dtype))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"could not load a text-to-image pipeline from {model!r}: "
                                 f"{type(exc).__name__}: {str(exc)[:300]}") from None
        offloaded = offload and device().startswith("cuda")
        if offloaded:
            pipe.enable_model_cpu_offload(device=device())
        else:
            if offload:
                log.info("cpu_offload ignored: this worker already runs on %s", device())
            pipe.to(device())
        pipe.set_progress_bar_config(disable=True)
        return ResidentPipeline(pipe, pipe.scheduler, AdapterCache(pipe, settings.image_adapter_cache_size),
                                offloaded)
    return load


def pipeline_dir(model: str, revision: str | None, token: str | None) -> Path:
    """The pipeline's absolute directory: under this worker's model roots, or the Hub snapshot that diffusers'
    own download picks (the variant and component files a pipeline needs), never one relative to the cwd."""
    from diffusers import DiffusionPipeline

    found = resolve_model(model, get_settings())
    if found.is_local:
        return Path(found.value)
    try:
        return Path(DiffusionPipeline.download(found.value, revision=revision, token=token)).resolve()
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not download the pipeline {model!r}: {type(exc).__name__}: "
                             f"{str(exc)[:300]}") from None
