"""Tiny models for tests, built once per session under the session's model root (inside GPUQ_MODEL_ROOTS)."""
from __future__ import annotations

import shutil
from pathlib import Path

from gpuq.worker.devmodels import ensure_built, packaged_minilm_path


def tiny(root: Path, name: str) -> str:
    """Path of dev model ``name`` (see gpuq.worker.devmodels.BUILDERS), built on first use."""
    return str(ensure_built(root, name))


def minilm_copy(root: Path, name: str) -> str:
    """The packaged all-MiniLM-L6-v2 under another path: a second model of the same size (hard links)."""
    target = root / name
    if not target.exists():
        shutil.copytree(packaged_minilm_path(), target, copy_function=_link)
    return str(target)


def _link(src: str, dst: str) -> None:
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)
