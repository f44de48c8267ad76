"""The engine of a resident causal LM: made on first use, kept on the resident model (it goes when the model is
evicted), sized from the worker's memory budget. Models it cannot serve (see ``unsupported``) keep the
static ``generate`` path."""
from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from gpuq.common.settings import Settings
from gpuq.worker.generation.cache import MASKED_ATTENTION, probe_shape
from gpuq.worker.generation.engine import Engine, Limits
from gpuq.worker.generation.outputs import get_pump
from gpuq.worker.generation.metrics import METRICS
from gpuq.worker.inference.generation import eos_ids
from gpuq.worker.models import ModelKey, get_cache

log = logging.getLogger(__name__)
_ATTR = "_gpuq_engine"
_LOCK = threading.Lock()
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()  # the metrics publisher asks them whether work is on


def unsupported(model: Any) -> str | None:
    """Why the engine cannot run ``model`` (None: it can)."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return "an encoder-decoder model"
    text = config.get_text_config()
    types = getattr(text, "layer_types", None)
    windowed = getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True)
    if any(t != "full_attention" for t in types) if types else windowed:
        return "attention layers other than full attention (sliding windows, hybrid caches)"
    attention = getattr(config, "_attn_implementation", None) or "eager"
    if attention not in MASKED_ATTENTION:
        return f"attention implementation {attention!r} (the engine builds masks for sdpa and eager)"
    return None


def capacity_bytes(settings: Settings, budget: int) -> int:
    """The KV-cache bytes one engine may hold: ``GPUQ_KV_CACHE_BUDGET``, else a fraction of the model cache's."""
    if settings.kv_cache_budget:
        return int(settings.kv_cache_budget)
    return int(budget * settings.kv_cache_fraction)


def engine_for(resident: Any, key: ModelKey, settings: Settings) -> Engine | None:
    """The resident model's engine (made on first use); None when the model needs the static path."""
    found = resident.__dict__.get(_ATTR)
    if found is not None:
        return found or None
    with _LOCK:
        found = resident.__dict__.get(_ATTR)
        if found is None:
            found = resident.__dict__[_ATTR] = _make(resident, key, settings) or False
    return found or None


def _make(resident: Any, key: ModelKey, settings: Settings) -> Engine | None:
    model, name = resident.model, key.model
    why = unsupported(model)
    layers = int(getattr(model.config.get_text_config(), "num_hidden_layers", 0) or 0)
    shape = probe_shape(model, layers, model.config._attn_implementation) if why is None and layers else None
    if shape is None:
        log.info("model %s runs on static generate: %s", name, why or "its layers keep other state than keys "
                 "and values")
        return None
    cache = get_cache()
    limits = Limits(capacity_bytes(settings, cache.budget), settings.generation_max_sequences,
                    settings.generation_prefill_tokens)

    def hold(nbytes: int) -> bool:
        return cache.hold(f"kv:{name}:{id(resident)}", nbytes, keep=key)

    engine = Engine(model, shape, limits, hold, model.config._attn_implementation, sorted(eos_ids(model)), name,
                    emit=get_pump().put)
    _ENGINES.add(engine)  # (the caller holds _LOCK)
    METRICS.keep_fresh(lambda: any(e.busy() for e in list(_ENGINES)))
    log.info("generation engine for %s: KV cache up to %.1f MiB (%d positions, %d bytes each)", name,
             limits.capacity_bytes / (1 << 20), engine.capacity_tokens, shape.bytes_per_token())
    return engine
