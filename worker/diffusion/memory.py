"""Device memory: a per-worker budget checked before a job runs; out-of-memory turned into a clean failure."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from gpuq.common.errors import ResourceExhausted
from gpuq.common.settings import Settings
from gpuq.worker.models import release_memory

T = TypeVar("T")
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


def check_budget(width: int, height: int, batch: int, guided: bool, settings: Settings) -> None:
    """Refuse a generation larger than this worker's GPUQ_IMAGE_MEMORY_BUDGET_PIXELS, before it allocates.

    Activation memory grows with width x height x batch; classifier-free guidance runs the UNet on twice
    the batch. The budget is per worker (set from its GPU's size), so it is checked here, not in the API.
    """
    budget = settings.image_memory_budget_pixels
    effective = batch * (2 if guided else 1)
    need = width * height * effective
    if budget is not None and need > budget:
        raise ResourceExhausted(f"{width}x{height} x batch {effective} = {need} pixels exceeds this worker's "
                                f"memory budget of {budget} (GPUQ_IMAGE_MEMORY_BUDGET_PIXELS)")


def is_oom(exc: BaseException) -> bool:
    """True for CUDA (torch.cuda.OutOfMemoryError), host (MemoryError) and CPU-allocator exhaustion."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


def call_guarded(call: Callable[[], T]) -> T:
    """Run ``call``; on out-of-memory free what it held and raise ResourceExhausted (the worker carries on).

    The memory is released *after* the except block: until then the exception's traceback keeps the failed
    call's frames, and with them its activations, alive.
    """
    try:
        return call()
    except Exception as exc:  # only OOM is translated; everything else propagates unchanged
        if not is_oom(exc):
            raise
        message = f"out of memory while generating: {type(exc).__name__}: {str(exc)[:300]}"
    release_memory()
    raise ResourceExhausted(message)
