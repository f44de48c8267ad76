"""Cheap previews of in-progress latents: a linear latent -> RGB projection, no VAE decode."""
from __future__ import annotations

import io
from typing import Any

# Least-squares fits of RGB to the 4 latent channels (as used by ComfyUI's latent previews).
SD_FACTORS = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
              (-0.2120, -0.2616, -0.7177))
SDXL_FACTORS = ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
                (-0.3165, -0.2492, -0.2188))
SDXL_BIAS = (0.1084, -0.0175, -0.0011)
SDXL_SCALING = 0.13025
Factors = tuple[tuple[float, ...], ...]


def factors_for(pipe: Any) -> tuple[Factors, tuple[float, ...]]:
    """(factors, bias) for the pipeline's latent space: SDXL's VAE is recognised by its scaling factor."""
    vae = getattr(pipe, "vae", None)
    if getattr(getattr(vae, "config", None), "scaling_factor", None) == SDXL_SCALING:
        return SDXL_FACTORS, SDXL_BIAS
    return SD_FACTORS, (0.0, 0.0, 0.0)


def preview_png(latents: Any, factors: Factors, bias: tuple[float, ...]) -> bytes | None:
    """A small PNG (latent resolution, the batch side by side); None when latents are not 4-channel maps."""
    import torch
    from PIL import Image

    if latents.ndim != 4 or latents.shape[1] != len(factors):
        return None
    weight = torch.tensor(factors, dtype=torch.float32, device=latents.device)
    rgb = torch.einsum("bchw,ck->bhwk", latents.float(), weight) + torch.tensor(bias, device=latents.device)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8)
    strip = torch.cat(list(pixels), dim=1).cpu().numpy()  # (h, batch * w, 3)
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
