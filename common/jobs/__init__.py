"""Job kinds. Importing this package registers every built-in kind."""
from __future__ import annotations

from common.jobs import evaluate, finetune, inference, synthetic, tokenizer

BUILTIN_KINDS = (inference, synthetic, finetune, tokenizer, evaluate)
