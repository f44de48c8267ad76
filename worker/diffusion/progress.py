"""Progress from diffusers' ``callback_on_step_end``: one event per denoising step, optional previews."""
from __future__ import annotations

import time
from typing import Any

from gpuq.worker.context import JobContext
from gpuq.worker.diffusion.preview import factors_for, preview_png


class StepReporter:
    """The pipeline callback. ``ctx.progress`` raises JobCancelled when a cancel was requested, which
    propagates out of the pipeline call: a cancelled job stops within one step, before the VAE decode."""

    def __init__(self, ctx: JobContext, pipe: Any, steps: int, preview_every: int | None) -> None:
        self.ctx = ctx
        self.steps = steps
        self.preview_every = preview_every
        self.factors = factors_for(pipe)
        self.previews: list[str] = []
        self.done = 0

    def __call__(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        self.done = step + 1
        # Some schedulers (heun, kdpm2) take two model evaluations per requested step: count what runs.
        total = int(getattr(pipe, "num_timesteps", 0) or self.steps)
        extra: dict[str, Any] = {"unit": "steps"}
        if self.preview_every and self.done % self.preview_every == 0:
            begin = time.perf_counter()
            extra.update(self._preview(tensors["latents"]))
            self.ctx.progress_ms += (time.perf_counter() - begin) * 1000  # previews are progress reporting too
        self.ctx.progress(self.done, total, **extra)
        return {}

    def _preview(self, latents: Any) -> dict[str, str]:
        png = preview_png(latents, *self.factors)
        if png is None:
            return {}
        name = f"previews/step-{self.done:04d}.png"
        self.ctx.put_artifact(name, png)  # stored before the event that links it
        self.previews.append(name)
        return {"preview": name, "preview_url": artifact_url(self.ctx.job_id, name)}


def artifact_url(job_id: str, name: str) -> str:
    """The API path an artifact downloads from."""
    return f"/v1/jobs/{job_id}/artifacts/{name}"
