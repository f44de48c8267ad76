"""The resident-model cache: a byte budget measured from real torch modules, LRU eviction, pins, admission."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from gpuq.common.errors import ResourceExhausted
from gpuq.worker.models import ModelKey, ResidentModels
from gpuq.worker.sizing import estimate_bytes, measure_bytes

MiB = 1 << 20


def key(name: str) -> ModelKey:
    return ModelKey(name, None, "base-model", "torch.float32", "cpu")


def names(cache: ResidentModels) -> list[str]:
    """Resident model names, least recently used first."""
    return [k.model for k in cache.keys()]  # noqa: SIM118 - ResidentModels.keys() is a list, not a dict view


def module(mib: float) -> torch.nn.Module:
    """A real module holding ``mib`` MiB of float32 parameters."""
    return torch.nn.Linear(int(mib * MiB / 4 / 256), 256, bias=False)


def test_size_is_measured_from_parameters_and_tied_weights_count_once() -> None:
    m = module(2)
    tied = torch.nn.ModuleDict({"a": m, "b": m})
    assert measure_bytes(m) == pytest.approx(2 * MiB, rel=0.01)
    assert measure_bytes(tied) == measure_bytes(m)
    assert measure_bytes((object(), {"model": m})) == measure_bytes(m)


def test_least_recently_used_model_is_evicted_to_stay_in_budget() -> None:
    cache = ResidentModels(budget_bytes=5 * MiB)
    cache.get(key("a"), lambda: module(2))
    cache.get(key("b"), lambda: module(2))
    cache.get(key("a"), lambda: module(2))  # a is now the most recent
    cache.get(key("c"), lambda: module(2))
    assert names(cache) == ["a", "c"]
    assert cache.used() <= 5 * MiB
    assert cache.stats.evictions == 1


def test_pinned_model_is_never_evicted() -> None:
    cache = ResidentModels(budget_bytes=5 * MiB)
    cache.get(key("pinned"), lambda: module(2), pin=True)
    cache.get(key("b"), lambda: module(2))
    cache.get(key("c"), lambda: module(2))
    assert names(cache) == ["pinned", "c"]


def test_model_that_cannot_fit_is_refused_before_loading() -> None:
    cache = ResidentModels(budget_bytes=5 * MiB)
    cache.get(key("pinned"), lambda: module(2), pin=True)
    calls = []
    with pytest.raises(ResourceExhausted, match="budget"):
        cache.get(key("big"), lambda: calls.append(1), size_hint=4 * MiB)
    assert calls == []  # never loaded
    assert names(cache) == ["pinned"]


def test_model_that_turns_out_too_big_is_dropped_with_a_clear_error() -> None:
    cache = ResidentModels(budget_bytes=3 * MiB)
    cache.get(key("a"), lambda: module(1))
    with pytest.raises(ResourceExhausted, match="over the resident-model budget"):
        cache.get(key("big"), lambda: module(4))
    assert "big" not in names(cache)


def test_concurrent_requests_for_one_model_load_it_once() -> None:
    cache = ResidentModels(budget_bytes=50 * MiB)
    loads = []

    def loader() -> torch.nn.Module:
        loads.append(1)
        time.sleep(0.2)
        return module(1)
    threads = [threading.Thread(target=cache.get, args=(key("m"), loader)) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert loads == [1] and cache.stats.hits == 7


def test_load_failure_reaches_every_waiter_and_is_not_cached() -> None:
    cache = ResidentModels(budget_bytes=50 * MiB)

    def broken() -> None:
        raise OSError("no weights")
    with pytest.raises(OSError):
        cache.get(key("m"), broken)
    _, load_ms = cache.get(key("m"), lambda: module(1))
    assert load_ms > 0 and cache.keys() == [key("m")]


def test_held_models_are_published_on_every_change() -> None:
    published: list[list[str]] = []
    cache = ResidentModels(budget_bytes=3 * MiB, on_change=published.append)
    cache.get(key("a"), lambda: module(2))
    cache.get(key("b"), lambda: module(2))
    assert published[0] == ["a"] and published[-1] == ["b"]


def test_estimate_reads_safetensors_headers_in_the_target_dtype() -> None:
    from gpuq.worker.devmodels import packaged_minilm_path

    fp32 = estimate_bytes(str(packaged_minilm_path()), None, 4)
    fp16 = estimate_bytes(str(packaged_minilm_path()), None, 2)
    assert fp32 is not None and fp16 is not None
    assert 80 * MiB < fp32 < 95 * MiB and fp16 == pytest.approx(fp32 / 2, rel=0.01)
