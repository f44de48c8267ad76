"""Device and dtype choice for the process that runs jobs."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from gpuq.common.settings import get_settings


@lru_cache(maxsize=1)
def device() -> str:
    """cuda when available (or as configured), else cpu."""
    import torch

    configured = get_settings().device
    if configured:
        return configured
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str) -> Any:
    """Map a dtype name to torch; ``auto`` is half precision on GPU and float32 on CPU."""
    import torch

    if name == "auto":
        name = get_settings().dtype
    if name == "auto":
        if device().startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, name)
