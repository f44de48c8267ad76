"""Image-job test helpers: the tiny SD under the session's model root, LoRAs for it, PNG inspection."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx

# A 1x1 PNG, base64-encoded: the smallest real image for validation tests.
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="


def tiny_sd(model_root: Path) -> Path:
    """The tiny Stable Diffusion pipeline, built once per root (lock-protected across processes)."""
    from gpuq.worker.devmodels import ensure_built

    return ensure_built(model_root, "sd")


def build_lora(sd: Path, out: Path, seed: int = 0, scale: float = 0.5) -> Path:
    """A LoRA for the tiny SD: PEFT layers on the UNet's attention projections with random non-zero B weights
    (zero B, PEFT's default, would be a no-op), saved the way diffusers trainers save them."""
    if (out / "pytorch_lora_weights.safetensors").is_file():
        return out
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    scratch = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    StableDiffusionPipeline.save_lora_weights(scratch, unet_lora_layers=get_peft_model_state_dict(unet),
                                              safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    scratch.rename(out)
    return out


def image_body(model: str, **params: Any) -> dict[str, Any]:
    """An image job request with small, fast defaults (tiny SD, 3 steps, fixed seed)."""
    return {"kind": "image", "model": model,
            "params": {"prompt": "a red fox in the snow", "num_inference_steps": 3, "seed": 7, **params}}


def download(client: httpx.Client, job_id: str, name: str) -> bytes:
    """Download one artifact of a job (asserting 200)."""
    resp = client.get(f"/v1/jobs/{job_id}/artifacts/{name}")
    assert resp.status_code == 200, resp.text
    return resp.content


def png_info(data: bytes) -> tuple[tuple[int, int], dict[str, Any], str]:
    """(size, gpuq metadata, 'parameters' text) of a PNG; decoding it proves it is a valid image."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.size, json.loads(img.text["gpuq"]), img.text["parameters"]


def pixels(data: bytes) -> bytes:
    """The decoded RGB pixels of a PNG (equal images with different text chunks compare equal)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB").tobytes()


def digests(job: dict[str, Any]) -> list[str]:
    """sha256 of each generated image, in order, as the record reports them."""
    return [img["sha256"] for img in job["result"]["images"]]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
