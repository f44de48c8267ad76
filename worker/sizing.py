"""How many bytes a model takes: measured after loading, estimated from its weight files before."""
from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
# Bytes per element of the dtypes safetensors headers name.
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_FLOATS = {"F64", "F32", "F16", "BF16"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def device_allocated(device: str) -> int | None:
    """Bytes the caching allocator has handed out on ``device``; None off CUDA (CPU models are measured)."""
    if not device.startswith("cuda"):
        return None
    import torch

    torch.cuda.synchronize(device)
    return int(torch.cuda.memory_allocated(device))


def _modules(value: Any, depth: int = 0) -> list[Any]:
    import torch

    if isinstance(value, torch.nn.Module):
        return [value]
    if depth > 2:
        return []
    if isinstance(value, dict):
        return [m for v in value.values() for m in _modules(v, depth + 1)]
    if isinstance(value, (list, tuple)):
        return [m for v in value for m in _modules(v, depth + 1)]
    attrs = getattr(value, "__dict__", {})
    return [m for v in attrs.values() if not isinstance(v, (str, int, float)) for m in _modules(v, depth + 1)]


def measure_bytes(value: Any) -> int:
    """Bytes of every distinct parameter and buffer reachable from ``value`` (module, pipeline, tuple)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for module in _modules(value):
        for tensor in [*module.parameters(), *module.buffers()]:
            ident = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
            if ident in seen:  # tied weights share one storage
                continue
            seen.add(ident)
            total += tensor.untyped_storage().nbytes()
    return total


def default_budget(device: str) -> int:
    """80% of the GPU's memory, or half the host's RAM."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.get_device_properties(device).total_memory * 0.8)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)


def _safetensors_bytes(path: Path, target_bytes: int | None) -> int:
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    total = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in meta["shape"]:
            count *= dim
        width = _DTYPE_BYTES.get(meta["dtype"], 4)
        if target_bytes and meta["dtype"] in _FLOATS:
            width = target_bytes
        total += count * width
    return total


def weights_dir(model: str, revision: str | None) -> Path | None:
    """The directory holding the weights: a local model, or the Hub cache's snapshot (never downloads)."""
    path = Path(model)
    if path.is_absolute():  # a stored local reference; a Hub id is never looked up relative to the cwd
        return path if path.is_dir() else None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, revision=revision, local_files_only=True,
                                      allow_patterns=["*.json"]))
    except Exception:  # noqa: BLE001 - not cached yet: no estimate, the load is measured instead
        return None


def estimate_bytes(model: str, revision: str | None, dtype_bytes: int | None) -> int | None:
    """Bytes the weights will take once loaded in a ``dtype_bytes`` float type, from the files; None if
    unknown."""
    folder = weights_dir(model, revision)
    if folder is None:
        return None
    # Top level only: a transformers model keeps its weights there (subfolders hold other things: ONNX,
    # pooling).
    files = [p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file()]
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    try:
        if safetensors:
            return sum(_safetensors_bytes(p, dtype_bytes) for p in safetensors)
        return sum(p.stat().st_size for p in files) or None
    except (OSError, ValueError, KeyError, struct.error) as exc:
        log.debug("no size estimate for %s: %s", model, exc)
        return None
