"""Baseline for the benchmarks: a plain Celery app with a resident model, the way people usually write it."""
from __future__ import annotations

import os
from typing import Any

from celery import Celery

url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("bare", broker=url, backend=url)
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                worker_prefetch_multiplier=1, task_acks_late=True, worker_hijack_root_logger=False)
_MODEL: dict[str, Any] = {}


def _embedder() -> Any:
    if "m" not in _MODEL:
        from transformers import AutoModel, AutoTokenizer

        path = os.environ["BENCH_MODEL"]
        _MODEL["m"] = (AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval())
    return _MODEL["m"]


@app.task(name="bare.embed")
def embed(text: str) -> list[float]:
    """Mean-pooled embedding of one sentence with a resident model."""
    import torch

    tok, model = _embedder()
    enc = tok([text], padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return [float(x) for x in ((hidden * mask).sum(1) / mask.sum(1))[0]]


@app.task(name="bare.noop")
def noop() -> int:
    """Does nothing: the round-trip cost of Celery itself."""
    return 0
