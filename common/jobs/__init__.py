"""Job kinds. Importing this package registers every built-in kind."""
from __future__ import annotations

from common.jobs import batch_inference, inference, synthetic

BUILTIN_KINDS = (inference, batch_inference, synthetic)
