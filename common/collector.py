"""The cyclic garbage collector, tuned for a long-running server process (the API, a worker).

With CPython's default thresholds (700 net container allocations per young collection) a process serving
dozens of requests at once collects every few requests: what the requests in flight hold is alive, so each
collection walks it, collects almost nothing, and promotes it; every tenth pushes it into the next
generation, whose collections walk it again. In the API that was 10-13% of a submit's CPU (gc.callbacks
timing in bench/openai_compat's submit phase: 0.05-0.13 ms per request). A young threshold above what the
requests in flight allocate leaves collections to real growth; the garbage cycles that do build up between
them (exceptions with their tracebacks, futures) are bounded by the threshold. What startup built (modules,
routes, schemas, models' configs) lives as long as the process, so it is frozen out of the generations and a
full collection walks only what came after.
"""
from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000  # net container allocations between young collections (CPython's default: 700)
OLDER_THRESHOLDS = (20, 20)  # young collections per middle one, middle per full one (default 10, 10)


def tune_for_serving() -> None:
    """Freeze what exists now and raise the thresholds; call once the process has built its long-lived state."""
    gc.collect()
    gc.freeze()
    young, *_ = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), *OLDER_THRESHOLDS)
