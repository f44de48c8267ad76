"""The generation engine's parts in process, on the tiny chat GPT-2: text tracking, sampling, admission by KV
budget, stop requests, the output pump, the pass guard's writer order, KV bytes in the model cache."""
from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from gpuq.common.errors import ResourceExhausted
from gpuq.worker.generation.cache import probe_shape
from gpuq.worker.generation.engine import Engine, Limits
from gpuq.worker.generation.outputs import OutputPump, merge
from gpuq.worker.generation.sampling import Sampling, choose, generator
from gpuq.worker.generation.sequence import JobHandle, Sequence
from gpuq.worker.generation.text import TextTracker
from gpuq.worker.models import ModelKey, ResidentModels
from tests.conftest import MODEL_ROOT
from tests.support.models import tiny


@pytest.fixture(scope="module")
def lm() -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(tiny(MODEL_ROOT, "gpt2-chat"))
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()


def engine(lm: tuple[Any, Any], capacity: int = 1 << 22, hold: Any = None) -> Engine:
    tok, model = lm
    shape = probe_shape(model, model.config.num_hidden_layers, "sdpa")
    assert shape is not None and shape.bytes_per_token() == 512
    return Engine(model, shape, Limits(capacity, 16, 256), hold or (lambda n: True), "sdpa", [tok.eos_token_id],
                  "tiny")


def finish(seqs: list[Sequence], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not all(s.done for s in seqs):
        assert time.monotonic() < deadline, [(s.tokens, s.finish_reason) for s in seqs]
        seqs[0].job.event.wait(0.05)
        seqs[0].job.event.clear()


def test_incremental_text_is_the_text_of_all_tokens_and_stops_cut_it(lm: tuple[Any, Any]) -> None:
    tok, _ = lm
    rng = random.Random(0)
    for _ in range(20):
        ids = [rng.randrange(len(tok) - 1) for _ in range(rng.randint(1, 30))]
        tracker = TextTracker(tok, ())
        streamed = ""
        for token in ids:
            tracker.push(token)
            streamed += tracker.delta(final=False)
        tracker.close()
        streamed += tracker.delta(final=True)
        assert tracker.text == streamed == tok.decode(ids, skip_special_tokens=True)
    ids = tok("the queue runs jobs all day")["input_ids"]
    tracker = TextTracker(tok, ("jobs",))
    stopped = [tracker.push(t) for t in ids]
    assert any(stopped) and tracker.text == "the queue runs "
    held = TextTracker(tok, ("jobs all",))
    for t in tok("the queue runs jobs")["input_ids"]:
        held.push(t)
    assert held.text == "the queue runs jobs"
    assert held.delta(final=False) == "the queue ru"  # the last 7 characters may begin the stop string


def test_a_seeded_row_draws_the_same_whatever_rows_share_the_batch() -> None:
    logits = torch.randn(4, 300)

    class Row:
        def __init__(self, sampling: Sampling, seed: int) -> None:
            self.sampling, self.rng, self.tokens, self.prompt = sampling, generator(seed, torch.device("cpu")), [], [1]

    mine = Sampling(do_sample=True, temperature=0.8, top_k=7, top_p=0.9)
    alone = [int(choose(logits[:1], [Row(mine, 5)], []).tokens[0]) for _ in range(3)]
    companions = [Row(Sampling(), 0), Row(Sampling(do_sample=True, top_k=200), 1), Row(Sampling(min_new_tokens=3), 2)]
    shared = [int(choose(logits, [Row(mine, 5), *companions], [0]).tokens[0]) for _ in range(3)]
    assert alone == shared
    greedy = choose(logits, [Row(Sampling(), 0)] * 4, []).tokens.tolist()
    assert greedy == logits.argmax(-1).tolist()
    best = int(logits[0].argmax())
    banned = choose(logits[:1].clone(), [Row(Sampling(min_new_tokens=1), 0)], [best]).tokens.tolist()
    assert banned[0] != best


def test_rows_are_admitted_by_budget_waiters_follow_and_too_large_is_refused(lm: tuple[Any, Any]) -> None:
    tok, _ = lm
    eng = engine(lm, capacity=128 * 512 * 2)  # two rows of 128 positions
    job = JobHandle(None)
    seqs = [Sequence(tok("hello")["input_ids"], 100, Sampling(min_new_tokens=100), job, i) for i in range(3)]
    eng.submit(seqs)
    deadline = time.monotonic() + 30
    while not any(s.waiting_for_capacity for s in seqs):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    finish(seqs)
    assert [len(s.tokens) for s in seqs] == [100, 100, 100]
    assert len({tuple(s.tokens) for s in seqs}) == 1
    with pytest.raises(ResourceExhausted, match="GPUQ_KV_CACHE_BUDGET"):
        eng.check_fits(Sequence([1] * 10, 300, Sampling(), job), "inputs.0")


def test_a_stop_request_ends_the_sequence_at_the_next_step_and_frees_its_row(lm: tuple[Any, Any]) -> None:
    tok, _ = lm
    eng = engine(lm)
    stop = threading.Event()
    job = JobHandle(None, stop_reason=lambda: "cancelled" if stop.is_set() else None)
    other = JobHandle(None)
    long = Sequence(tok("hello")["input_ids"], 900, Sampling(min_new_tokens=900), job)
    short = Sequence(tok("a worker")["input_ids"], 30, Sampling(), other)
    eng.submit([long, short])
    while len(long.tokens) < 5:
        time.sleep(0.002)
    stop.set()
    finish([long, short])
    assert long.finish_reason == "cancelled" and len(long.tokens) < 900
    assert short.finish_reason in ("length", "stop")
    deadline = time.monotonic() + 10
    while eng.gauges()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_the_pump_merges_a_sequences_deltas_and_flush_waits_for_them() -> None:
    written: list[list[tuple[str, dict[str, Any]]]] = []
    gate = threading.Event()

    def write(events: list[tuple[str, dict[str, Any]]]) -> None:
        gate.wait(5)
        written.append(events)

    pump = OutputPump(write)
    pump.put([("j", {"index": 0, "text": "a"})])
    pump.put([("j", {"index": 0, "text": "b"}), ("j", {"index": 1, "text": "x"}), (None, {"index": 0})])
    pump.put([("j", {"index": 0, "text": "c", "finish_reason": "stop"})])
    gate.set()
    pump.flush("j")
    texts = {d["index"]: d["text"] for batch in written for _, d in batch if d["index"] == 1}
    assert "".join(d["text"] for batch in written for _, d in batch if d["index"] == 0) == "abc"
    assert texts == {1: "x"}
    assert merge([("j", {"index": 0, "text": "a"}), ("j", {"index": 0, "text": "b", "finish_reason": "length"})]) \
        == [("j", {"index": 0, "text": "ab", "finish_reason": "length"})]


def test_writers_on_the_pass_guard_take_turns_in_arrival_order() -> None:
    from gpuq.worker.adapters import _PassGuard

    guard, order = _PassGuard(), []
    stop = threading.Event()

    def engine_steps() -> None:  # takes the guard again and again, as decode steps on a base with adapters do
        while not stop.is_set():
            with guard.exclusive():
                time.sleep(0.001)

    looping = threading.Thread(target=engine_steps)
    looping.start()
    time.sleep(0.01)
    with guard.exclusive():  # a job loading its adapter gets in despite the loop
        order.append("loader")
    stop.set()
    looping.join()
    assert order == ["loader"]


def test_kv_bytes_held_in_the_model_cache_evict_idle_models_and_are_refused_beyond_the_budget() -> None:
    cache = ResidentModels(budget_bytes=1000)
    key = ModelKey("m", None, "causal-lm", "float32", "cpu")
    other = ModelKey("o", None, "causal-lm", "float32", "cpu")
    cache.get(key, lambda: torch.nn.Linear(10, 10, bias=False), size_hint=400)  # 400 bytes each
    cache.get(other, lambda: torch.nn.Linear(10, 10, bias=False), size_hint=400)
    assert cache.hold("kv:m", 500, keep=key)  # the idle model goes, the served one stays
    assert cache.keys() == [key] and cache.held() == 500
    assert not cache.hold("kv:m", 700, keep=key)  # 400 + 700 > 1000: refused, nothing changes
    assert cache.held() == 500
    assert cache.hold("kv:m", 0) and cache.held() == 0


def test_models_with_windowed_or_hybrid_attention_keep_the_static_path() -> None:
    from types import SimpleNamespace

    from transformers import Gemma2Config, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    from gpuq.worker.generation.resident import unsupported

    def why(config: Any, attention: str = "sdpa") -> str | None:
        config._attn_implementation = attention
        return unsupported(SimpleNamespace(config=config))

    assert why(GPT2Config()) is None and why(LlamaConfig()) is None
    assert why(Qwen2Config()) is None  # a sliding_window it does not use (use_sliding_window false)
    assert "sliding" in str(why(MistralConfig())) and "sliding" in str(why(Gemma2Config()))
    assert "flash_attention_2" in str(why(GPT2Config(), "flash_attention_2"))
