"""The fixed scheduler list callers choose from, mapped to diffusers scheduler classes."""
from __future__ import annotations

from typing import Any

# name -> (diffusers class, config overrides). pndm skips its Runge-Kutta warm-up so one requested step is one
# denoising step, as in Stable Diffusion's own config.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "kdpm2": ("KDPM2DiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler",
                        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "dpmpp_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "deis": ("DEISMultistepScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def make_scheduler(name: str | None, base: Any) -> Any:
    """A fresh scheduler for one job: ``name`` from the list, or the pipeline's own (``base``) when None.

    Schedulers keep per-run state (timesteps, step index), so every job gets a new one built from the
    pipeline's original config rather than reusing the previous job's.
    """
    if name is None:
        return type(base).from_config(base.config)
    import diffusers

    class_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(base.config, **overrides)
