"""The dynamic batcher in-process: requests share passes, limits hold, failures stay with their job."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gpuq.worker.batching import Batcher, Limits


class Model:
    """Doubles its inputs and remembers every pass; an input of -1 breaks the whole pass."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.passes: list[list[int]] = []
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def __call__(self, items: list[Any], stream: Any) -> list[Any]:
        with self.lock:
            self.passes.append(list(items))
        time.sleep(self.delay_s)
        if -1 in items:
            raise ValueError("bad input in this pass")
        return [x * 2 for x in items]


def _submit_many(batcher: Batcher, model: Model, values: list[int], limits: Limits,
                 key: str = "k") -> list[Any]:
    def one(v: int) -> Any:
        with batcher.arriving() as arrival:
            try:
                return batcher.submit(key, [v], model, limits, arrival=arrival)
            except ValueError as exc:
                return exc
    with ThreadPoolExecutor(len(values)) as pool:
        return list(pool.map(one, values))


def test_concurrent_requests_share_a_pass_and_keep_their_own_outputs() -> None:
    batcher, model = Batcher(), Model(delay_s=0.05)
    done = _submit_many(batcher, model, list(range(20)), Limits(max_items=8, max_wait_s=0.2))
    assert [d.outputs for d in done] == [[v * 2] for v in range(20)]
    assert max(len(p) for p in model.passes) > 1
    assert all(len(p) <= 8 for p in model.passes)
    assert sorted(v for p in model.passes for v in p) == list(range(20))
    assert max(d.jobs_in_pass for d in done) > 1


def test_bad_input_fails_only_its_own_request() -> None:
    batcher, model = Batcher(), Model(delay_s=0.05)
    done = _submit_many(batcher, model, [1, 2, -1, 3, 4, 5], Limits(max_items=16, max_wait_s=0.3))
    assert isinstance(done[2], ValueError)
    assert [d.outputs for i, d in enumerate(done) if i != 2] == [[2], [4], [6], [8], [10]]
    assert batcher.stats.isolated >= 1  # a merged pass failed and was split


def test_lone_request_runs_without_waiting_for_the_window() -> None:
    batcher, model = Batcher(), Model()
    start = time.monotonic()
    with batcher.arriving() as arrival:
        done = batcher.submit("k", [3], model, Limits(8, max_wait_s=2.0), arrival=arrival)
    assert done.outputs == [6]
    assert time.monotonic() - start < 1.0  # nobody else was on the way: no 2 s window


def test_request_waits_for_a_job_on_its_way() -> None:
    batcher, model = Batcher(), Model()
    limits = Limits(8, max_wait_s=1.0)
    results: list[Any] = []
    with batcher.arriving():  # a second job has been claimed but not submitted yet
        first = threading.Thread(target=lambda: results.append(batcher.submit("k", [1], model, limits)))
        first.start()
        time.sleep(0.1)
        results.append(batcher.submit("k", [2], model, limits))
        first.join()
    assert model.passes == [[1, 2]]


def test_different_keys_never_share_a_pass() -> None:
    batcher, model = Batcher(), Model(delay_s=0.02)
    limits = Limits(max_items=32, max_wait_s=0.2)

    def one(i: int) -> Any:
        with batcher.arriving() as arrival:
            return batcher.submit(f"adapter-{i % 2}", [i], model, limits, arrival=arrival)
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(one, range(10)))
    for p in model.passes:
        assert len({v % 2 for v in p}) == 1


def test_a_request_larger_than_the_limit_runs_alone() -> None:
    batcher, model = Batcher(), Model()
    done = batcher.submit("k", list(range(10)), model, Limits(max_items=4, max_wait_s=0.0))
    assert done.outputs == [v * 2 for v in range(10)]


def test_streamed_rows_map_back_to_their_job_and_input_index() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def generate(items: list[Any], stream: Any) -> list[Any]:
        stream({row: f"tok{row}" for row in range(len(items))})
        return items

    batcher = Batcher(emit_outputs=seen.extend)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(batcher.submit, "k", ["a", "b"], generate, Limits(8, 0.2), f"job{j}", None,
                               False, 10 * j) for j in range(2)]
        [f.result() for f in futures]
    assert sorted((job, data["index"]) for job, data in seen) == [("job0", 0), ("job0", 1), ("job1", 10),
                                                                  ("job1", 11)]


@pytest.mark.parametrize("wait_s", [0.0, 0.05])
def test_every_request_completes_under_churn(wait_s: float) -> None:
    batcher, model = Batcher(), Model()
    done = _submit_many(batcher, model, list(range(64)), Limits(max_items=7, max_wait_s=wait_s))
    assert [d.outputs for d in done] == [[v * 2] for v in range(64)]
    assert batcher.pending() == 0


class Timed(Model):
    """A Model that also records when each pass ran (start, end)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s)
        self.spans: list[tuple[float, float]] = []

    def __call__(self, items: list[Any], stream: Any) -> list[Any]:
        start = time.monotonic()
        out = super().__call__(items, stream)
        with self.lock:
            self.spans.append((start, time.monotonic()))
        return out


def _group(batcher: Batcher, model: Model, values: list[int], limits: Limits) -> list[Any]:
    """Queue one request per value before waiting for any (the way a group message runs), then collect."""
    with batcher.arriving():
        requests = [batcher.enqueue("k", [v], model, limits) for v in values]
    return [batcher.wait(r).outputs for r in requests]


@pytest.mark.parametrize("executors", [2, 3])
def test_work_that_fits_one_pass_is_shared_by_idle_executors(executors: int) -> None:
    batcher, model = Batcher(executors=executors), Timed(delay_s=0.2)
    outputs = _group(batcher, model, list(range(12)), Limits(max_items=16, max_wait_s=1.0))
    assert outputs == [[v * 2] for v in range(12)]
    assert sorted(len(p) for p in model.passes) == [12 // executors] * executors
    assert sorted(v for p in model.passes for v in p) == list(range(12))
    # The shares ran side by side, not one after another, and nobody waited out the 1 s window.
    assert max(s for s, _ in model.spans) < min(e for _, e in model.spans)


def test_one_executor_runs_what_fits_in_one_pass() -> None:
    batcher, model = Batcher(executors=1), Model()
    _group(batcher, model, list(range(12)), Limits(max_items=16, max_wait_s=1.0))
    assert [len(p) for p in model.passes] == [12]


def test_full_passes_are_not_split_while_work_exceeds_one_pass() -> None:
    batcher, model = Batcher(executors=2), Model(delay_s=0.05)
    _group(batcher, model, list(range(32)), Limits(max_items=16, max_wait_s=1.0))
    assert [len(p) for p in model.passes] == [16, 16]


def test_a_lone_request_is_never_split() -> None:
    batcher, model = Batcher(executors=2), Model()
    with batcher.arriving() as arrival:
        done = batcher.submit("k", [1, 2, 3], model, Limits(8, max_wait_s=1.0), arrival=arrival)
    assert done.outputs == [2, 4, 6] and model.passes == [[1, 2, 3]]


@pytest.mark.parametrize(("running", "passes"), [(4, [4, 8, 8]), (16, [16, 16])])
def test_work_is_shared_with_a_busy_executor_only_if_it_will_be_free_before_half_is_done(
        running: int, passes: list[int]) -> None:
    batcher, model = Batcher(executors=2), Model(delay_s=0.2)
    limits = Limits(max_items=16, max_wait_s=1.0)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(batcher.submit, "k", list(range(100, 100 + running)), model, limits)
        time.sleep(0.05)  # one executor is inside that pass; the other is idle
        outputs = _group(batcher, model, list(range(16)), limits)
        first.result()
    assert outputs == [[v * 2] for v in range(16)]
    assert [len(p) for p in model.passes] == passes
