"""Tiny but real Hugging Face models, built from configs with seeded random weights, for tests and the demo.

Every builder writes a directory that loads through the ordinary ``from_pretrained``,
``pipeline(task, model=dir)`` and ``StableDiffusionPipeline.from_pretrained(dir)`` paths, with a tokenizer
trained on a built-in corpus. Builders are re-exported lazily: ``build_all`` on a warm root never imports torch,
transformers or diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

from gpuq.worker.devmodels.catalog import (
    BUILDERS,
    build_all,
    builder,
    ensure_built,
    is_built,
    main,
    packaged_minilm_path,
)

_LAZY = {
    "build_tiny_gpt2": "gpuq.worker.devmodels.text",
    "build_tiny_chat_gpt2": "gpuq.worker.devmodels.text",
    "build_tiny_t5": "gpuq.worker.devmodels.text",
    "build_tiny_bert_classifier": "gpuq.worker.devmodels.bert",
    "build_tiny_bert_token_classifier": "gpuq.worker.devmodels.bert",
    "build_tiny_bert_masked_lm": "gpuq.worker.devmodels.bert",
    "build_tiny_bert_qa": "gpuq.worker.devmodels.bert",
    "build_tiny_bert_nli": "gpuq.worker.devmodels.bert",
    "SENTIMENT_LABELS": "gpuq.worker.devmodels.bert",
    "NER_LABELS": "gpuq.worker.devmodels.bert",
    "NLI_LABELS": "gpuq.worker.devmodels.bert",
    "build_tiny_vit": "gpuq.worker.devmodels.vision",
    "VIT_LABELS": "gpuq.worker.devmodels.vision",
    "build_tiny_sd": "gpuq.worker.devmodels.diffusion",
}

__all__ = [
    "BUILDERS",
    "NER_LABELS",
    "NLI_LABELS",
    "SENTIMENT_LABELS",
    "VIT_LABELS",
    "build_all",
    "build_tiny_bert_classifier",
    "build_tiny_bert_masked_lm",
    "build_tiny_bert_nli",
    "build_tiny_bert_qa",
    "build_tiny_bert_token_classifier",
    "build_tiny_chat_gpt2",
    "build_tiny_gpt2",
    "build_tiny_sd",
    "build_tiny_t5",
    "build_tiny_vit",
    "builder",
    "ensure_built",
    "is_built",
    "main",
    "packaged_minilm_path",
]


def __getattr__(name: str) -> Any:
    """Import a builder's module on first access (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
