"""Job kinds. Importing this package registers every built-in kind."""
from __future__ import annotations

from common.jobs import image, inference, synthetic

BUILTIN_KINDS = (image, inference, synthetic)
