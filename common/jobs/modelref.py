"""Model references: a Hub repo id, or a local directory under one of GPUQ_MODEL_ROOTS."""
from __future__ import annotations

import os
import re
import time
from functools import lru_cache
from pathlib import Path

from gpuq.common.errors import InvalidInput

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


def is_local(model: str) -> bool:
    """A reference is local when it looks like a filesystem path rather than a repo id."""
    return model.startswith(("/", "./", "../", "~")) or os.sep + os.sep in model or model.startswith(".")


def check_model_ref(model: str, roots: list[Path], field: str = "model") -> str:
    """Validate a model reference; local paths must resolve inside a configured root."""
    if is_local(model):
        path, is_dir = _local(model)
        allowed = _resolved(tuple(roots))
        if not any(path == r or path.is_relative_to(r) for r in allowed):
            raise InvalidInput(f"{field}: local path is outside GPUQ_MODEL_ROOTS", field=field)
        if not is_dir:
            raise InvalidInput(f"{field}: local model directory does not exist", field=field)
        return str(path)
    if ".." in model or not _HUB_ID.match(model):
        raise InvalidInput(f"{field}: not a Hub repo id (owner/name) nor an absolute path", field=field)
    return model


_LOCAL_TTL_S = 2.0
_local_cache: dict[str, tuple[float, Path, bool]] = {}


def _local(model: str) -> tuple[Path, bool]:
    """(resolved path, is a directory) of a local reference, remembered for a couple of seconds: resolving
    costs a syscall per path part, and a bulk submit names the same model hundreds of times."""
    now = time.monotonic()
    hit = _local_cache.get(model)
    if hit is not None and now - hit[0] < _LOCAL_TTL_S:
        return hit[1], hit[2]
    path = Path(model).expanduser().resolve()
    if len(_local_cache) > 1024:
        _local_cache.clear()
    _local_cache[model] = (now, path, path.is_dir())
    return path, _local_cache[model][2]


@lru_cache(maxsize=8)
def _resolved(roots: tuple[Path, ...]) -> list[Path]:
    """Configured roots, resolved once (they come from settings; resolving is a syscall per path part)."""
    return [r.expanduser().resolve() for r in roots]
