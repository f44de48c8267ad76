"""Job kinds. Importing this package registers every built-in kind."""
from __future__ import annotations

from gpuq.common.jobs import batch_inference, evaluate, finetune, image, inference, synthetic, tokenizer

BUILTIN_KINDS = (inference, batch_inference, image, synthetic, finetune, tokenizer, evaluate)
