"""Continuous batching on a real threads-pool worker: jobs with different prompts, lengths and settings share
decode steps and each gets exactly what it gets alone; streaming, stop strings, cancel, time limits, usage."""
from __future__ import annotations

import time
from typing import Any

import httpx

from tests.support.generation import events, gen, run_all, run_group, texts
from tests.support.jobs import run, submit, wait_status
from tests.support.prom import scrape, value

PROMPTS = ["the worker runs", "a queue of jobs on many workers all day long", "hello", "models stay resident",
           "x", "batches of sentences about cats and the queue"]


def mixed(model: str) -> list[dict[str, Any]]:
    """Jobs that could never share a static ``generate`` call: other lengths, stops, penalties, samplers."""
    return [gen(model, PROMPTS[0], max_new_tokens=60, min_new_tokens=60),
            gen(model, [PROMPTS[1], PROMPTS[2]], max_new_tokens=9, stop=["li"]),
            gen(model, PROMPTS[3], max_new_tokens=30, repetition_penalty=1.4, return_full_text=True),
            gen(model, PROMPTS[4], max_new_tokens=17, do_sample=True, temperature=0.7, top_k=20, seed=5),
            gen(model, PROMPTS[5], max_new_tokens=12, min_new_tokens=12, stream=True),
            gen(model, PROMPTS[2], max_new_tokens=20, do_sample=True, top_p=0.8, seed=11)]


def test_mixed_lengths_and_settings_in_shared_steps_each_match_the_request_alone(
        gclient: httpx.Client, gen_models: dict[str, str]) -> None:
    bodies = mixed(gen_models["chat"])
    alone = [run(gclient, body) for body in bodies]
    assert all(r["status"] == "succeeded" for r in alone), alone
    assert len({t for r in alone for t in texts(r["result"])}) > 4  # the model writes varied text
    together = run_all(gclient, bodies)  # as they arrive (concurrent submits), and in one bulk group
    assert [texts(r["result"]) for r in together] == [texts(r["result"]) for r in alone]
    records = run_group(gclient, bodies)
    assert [texts(r["result"]) for r in records] == [texts(r["result"]) for r in alone]
    assert max(r["batch"]["inputs"] for r in records) >= 5


def test_a_seeded_sample_is_the_same_whatever_shares_its_steps(gclient: httpx.Client,
                                                               gen_models: dict[str, str]) -> None:
    model = gen_models["chat"]
    seeded = gen(model, "the queue", max_new_tokens=24, do_sample=True, temperature=0.9, seed=42)
    alone = run(gclient, seeded)["result"]["generated_text"]
    greedy_company = [gen(model, p, max_new_tokens=40, min_new_tokens=40) for p in PROMPTS]
    sampling_company = [gen(model, p, max_new_tokens=8, do_sample=True, temperature=1.5, top_k=5, seed=i)
                        for i, p in enumerate(PROMPTS)]
    for company in (greedy_company, sampling_company):  # one group each: they surely share steps
        records = run_group(gclient, company[:3] + [seeded] + company[3:])
        assert records[3]["result"]["generated_text"] == alone
        assert records[3]["batch"]["jobs"] > 1
    other_seed = run(gclient, {**seeded, "params": {**seeded["params"], "seed": 43}})
    assert other_seed["result"]["generated_text"] != alone


def test_stream_adds_up_to_the_result_and_a_stop_string_never_leaks(gclient: httpx.Client,
                                                                     gen_models: dict[str, str]) -> None:
    model = gen_models["chat"]
    free = run(gclient, gen(model, PROMPTS[1], max_new_tokens=30))["result"]["generated_text"]
    stop = next(free[i:i + 2] for i in range(4, len(free) - 2) if free[i:i + 2].strip() and free[i:i + 2].isascii())
    rec = run(gclient, gen(model, [PROMPTS[1], PROMPTS[0]], max_new_tokens=30, stop=[stop], stream=True))
    outputs = [d for kind, d in events(gclient, rec["id"]) if kind == "output"]
    first = rec["result"][0]
    assert first["generated_text"] == free[:free.index(stop)] and first["finish_reason"] == "stop"
    for i, result in enumerate(rec["result"]):
        mine = [o for o in outputs if o["index"] == i]
        assert "".join(o["text"] for o in mine) == result["generated_text"]
        assert mine[-1]["finish_reason"] == result["finish_reason"]
        assert not any(stop in o["text"] for o in mine)


def test_usage_finish_reason_choices_logprobs_and_progress_in_tokens(gclient: httpx.Client,
                                                                    gen_models: dict[str, str]) -> None:
    model = gen_models["chat"]
    rec = run(gclient, gen(model, ["hello", "the worker"], max_new_tokens=6, min_new_tokens=6, logprobs=2))
    for result, prompt in zip(rec["result"], ["hello", "the worker"]):
        assert result["finish_reason"] == "length" and result["usage"]["completion_tokens"] == 6
        assert result["usage"]["prompt_tokens"] >= 1
        assert len(result["logprobs"]) == 6
        assert all(lp["logprob"] <= 0 and len(lp["top_logprobs"]) == 2 for lp in result["logprobs"])
    progress = [d for kind, d in events(gclient, rec["id"]) if kind == "progress"]
    assert progress and all(p["unit"] == "tokens" and p["total"] == 12 for p in progress)
    three = run(gclient, gen(model, "the queue", max_new_tokens=8, min_new_tokens=8, do_sample=True, seed=3,
                             n=3))["result"]
    assert [c["index"] for c in three["choices"]] == [0, 1, 2]
    assert three["generated_text"] == three["choices"][0]["generated_text"]
    assert len({c["generated_text"] for c in three["choices"]}) > 1
    assert three["usage"]["completion_tokens"] == 24
    beams = run(gclient, gen(model, "the queue", max_new_tokens=5, num_beams=2, n=2))  # the static path
    assert beams["status"] == "succeeded" and len(beams["result"]["choices"]) == 2


def test_cancel_mid_stream_frees_its_rows_at_the_next_step(gen_stack: Any, gclient: httpx.Client,
                                                           gen_models: dict[str, str]) -> None:
    model = gen_models["chat"]
    job = submit(gclient, gen(model, ["the queue", "a worker"], max_new_tokens=1000, min_new_tokens=1000,
                              stream=True, n=2))
    deadline = time.monotonic() + 60
    while not any(kind == "output" for kind, _ in events(gclient, job["id"])):
        assert time.monotonic() < deadline, "no output streamed"
        time.sleep(0.05)
    assert gclient.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    record = wait_status(gclient, job["id"])
    assert record["status"] == "cancelled", record
    stream = events(gclient, job["id"])
    outputs = [d for kind, d in stream if kind == "output"]
    assert {o.get("finish_reason") for o in outputs} >= {"cancelled"}
    assert stream[-1][0] == "cancelled"  # the last event of the stream: no output after it
    after = run(gclient, gen(model, "hello", max_new_tokens=4))
    assert after["status"] == "succeeded"
    wait_until_idle(gen_stack.metrics_url)


def test_the_time_limit_ends_a_long_generation(gen_stack: Any, gclient: httpx.Client,
                                               gen_models: dict[str, str]) -> None:
    from celery import Celery

    from gpuq.api.submission import prepare
    from gpuq.common.celery_config import TASK_NAME, celery_config
    from gpuq.common.records import JobStore
    from gpuq.common.schemas import JobRequest
    from gpuq.common.settings import Settings

    assert run(gclient, gen(gen_models["chat"], "warm", max_new_tokens=2))["status"] == "succeeded"  # loaded
    settings = Settings(redis_url=gen_stack.redis.url)
    body = gen(gen_models["chat"], "the queue", max_new_tokens=1000, min_new_tokens=1000, n=4, stream=True)
    job = prepare(JobRequest(**body), "alpha", settings)
    JobStore(gen_stack.r()).create_many([(job.fields, None, "")])
    app = Celery("time-limit-producer")
    app.conf.update(celery_config(settings))
    app.send_task(TASK_NAME, args=[job.fields["id"]], queue="inference", soft_time_limit=0.3, time_limit=10)
    record = wait_status(gclient, job.fields["id"], timeout=60)
    assert record["status"] == "failed" and record["error"]["type"] == "timeout", record
    assert events(gclient, job.fields["id"])[-1][0] == "failed"
    wait_until_idle(gen_stack.metrics_url)


def test_metrics_show_sequences_blocks_rate_and_latencies(gen_stack: Any, gclient: httpx.Client,
                                                          gen_models: dict[str, str]) -> None:
    run_all(gclient, [gen(gen_models["chat"], p, max_new_tokens=10) for p in PROMPTS[:3]])
    samples = wait_until_idle(gen_stack.metrics_url)
    assert value(samples, "gpuq_worker_generation_tokens_total") >= 30
    assert value(samples, "gpuq_worker_generation_time_to_first_token_seconds_count") >= 3
    assert value(samples, "gpuq_worker_generation_inter_token_latency_seconds_count") >= 27
    assert value(samples, "gpuq_worker_kv_cache_blocks", state="free") > 0
    assert ("gpuq_worker_generation_tokens_per_second", ()) in samples


def wait_until_idle(url: str) -> dict[Any, float]:
    """Scrape until the engine reports no running or waiting sequence (its rows were freed)."""
    deadline = time.monotonic() + 30
    while True:
        samples = scrape(url)
        if (value(samples, "gpuq_worker_generation_sequences", state="running") == 0
                and value(samples, "gpuq_worker_generation_sequences", state="waiting") == 0
                and value(samples, "gpuq_worker_generation_tokens_total") > 0):
            return samples
        assert time.monotonic() < deadline, samples
        time.sleep(0.2)
