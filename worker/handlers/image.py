"""Handler for the ``image`` kind: text-to-image on a resident diffusers pipeline.

Per job: fetch the pipeline from the resident cache (same accounting as text models), switch LoRA adapters on
it, set the job's scheduler and memory options, denoise with one progress event per step (cancellation checked
there), store PNGs with their parameters inside, and optionally push them to the Hub with a card.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from gpuq.common.jobs.image import StoredImageParams
from gpuq.worker.context import JobContext
from gpuq.worker.device import device, torch_dtype
from gpuq.worker.diffusion.adapters import AdapterUse, resolve_weights
from gpuq.worker.diffusion.memory import call_guarded, check_budget
from gpuq.worker.diffusion.outputs import card, png_bytes, write_push_folder
from gpuq.worker.diffusion.pipeline import TASK, ResidentPipeline, loader
from gpuq.worker.diffusion.plan import Plan, make_plan
from gpuq.worker.diffusion.progress import StepReporter, artifact_url
from gpuq.worker.hub import push_folder, token_for
from gpuq.worker.models import ModelKey


def _resident(ctx: JobContext) -> ResidentPipeline:
    p = ctx.params_as(StoredImageParams)
    # An offloaded pipeline is hooked differently from one living on the device: a separate resident entry.
    task = f"{TASK}+cpu-offload" if p.cpu_offload else TASK
    key = ModelKey(ctx.model, p.revision, task, str(torch_dtype(p.dtype)), device())
    load = loader(ctx.model, p.revision, p.dtype, p.cpu_offload, ctx.settings, token_for(None))
    resident: ResidentPipeline = ctx.resident(key, load)
    return resident


def _apply_adapter(ctx: JobContext, rp: ResidentPipeline) -> AdapterUse | None:
    adapter = ctx.params_as(StoredImageParams).adapter
    if adapter is None:
        rp.adapters.deactivate()
        return None
    weights = resolve_weights(adapter, ctx.tenant, ctx.store, token_for(None))
    return rp.adapters.activate(weights, adapter.weight)


def _generate(ctx: JobContext, rp: ResidentPipeline, plan: Plan) -> tuple[AdapterUse | None, list[Any],
                                                                             list[bool] | None, StepReporter]:
    use = _apply_adapter(ctx, rp)
    rp.configure(plan)
    reporter = StepReporter(ctx, rp.pipe, plan.steps, plan.preview_every)
    images, nsfw = rp.generate(plan, reporter)
    return use, images, nsfw, reporter


def _store_images(ctx: JobContext, plan: Plan, images: list[Any], nsfw: list[bool] | None
                  ) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    described, files = [], {}
    for i, image in enumerate(images):
        meta = plan.image_meta(i, ctx.model, ctx.params_as(StoredImageParams).adapter)
        name = f"images/image-{i}.png"
        files[name] = png_bytes(image, meta)
        info = ctx.put_artifact(name, files[name])
        described.append({"artifact": name, "url": artifact_url(ctx.job_id, name), "sha256": info.sha256,
                          "bytes": info.size, "seed": meta["seed"], "prompt": meta["prompt"],
                          "width": image.width, "height": image.height,
                          "nsfw_content_detected": nsfw[i] if nsfw is not None else None})
    return described, files


def _push(ctx: JobContext, plan: Plan, files: dict[str, bytes]) -> dict[str, Any]:
    p = ctx.params_as(StoredImageParams)
    push = p.push_to_hub
    assert push is not None  # run pushes only when the job asked
    rows = [{"file_name": name, **plan.image_meta(i, ctx.model, p.adapter)} for i, name in enumerate(files)]
    readme = card(ctx.job_id, ctx.model, push.repo_type, rows)
    with tempfile.TemporaryDirectory(prefix="gpuq-push-") as tmp:
        folder = write_push_folder(Path(tmp), push.path_in_repo, files, rows, readme)
        ctx.before_side_effect(f"pushing {len(files)} images to {push.repo_id}")  # never by a stale attempt
        result = push_folder(push, folder, f"gpuq image job {ctx.job_id}: {len(files)} images")
    return {**result.as_dict(), "path_in_repo": push.path_in_repo or ""}


def _generation(ctx: JobContext, plan: Plan, rp: ResidentPipeline, steps_run: int) -> dict[str, Any]:
    return {"model": ctx.model, "prompt": list(plan.prompts), "negative_prompt": plan.negative_prompt,
            "num_inference_steps": plan.steps, "denoising_steps": steps_run,
            "guidance_scale": plan.guidance_scale,
            "width": plan.width, "height": plan.height, "num_images": plan.num_images, "seed": plan.seed,
            "scheduler": plan.scheduler or type(rp.base_scheduler).__name__, "device": device(),
            "dtype": str(rp.pipe.dtype).removeprefix("torch."), "cpu_offload": rp.offloaded,
            "attention_slicing": plan.attention_slicing, "vae_slicing": plan.vae_slicing,
            "vae_tiling": plan.vae_tiling}


def run(ctx: JobContext) -> Any:
    """Generate the images; returns their descriptions, the resolved parameters, adapter and Hub details."""
    p = ctx.params_as(StoredImageParams)
    rp = _resident(ctx)
    plan = make_plan(p, rp.default_size())
    check_budget(plan.width, plan.height, plan.batch, plan.guidance_scale > 1, ctx.settings)
    use, images, nsfw, reporter = call_guarded(lambda: _generate(ctx, rp, plan))
    described, files = _store_images(ctx, plan, images, nsfw)
    result: dict[str, Any] = {"images": described, "generation": _generation(ctx, plan, rp, reporter.done),
                              "previews": reporter.previews, "adapter": None}
    if use is not None and p.adapter is not None:
        result["adapter"] = {"ref": p.adapter.ref, **use.as_dict()}
    if p.push_to_hub is not None:
        result["hub"] = _push(ctx, plan, files)
    return result
