"""Image jobs end to end: HTTP -> Redis -> real worker -> resident tiny Stable Diffusion -> PNG artifacts."""
from __future__ import annotations

import io
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import MODEL_ROOT
from tests.support.images import build_lora, digests, download, image_body, pixels, png_info, sha256, tiny_sd
from tests.support.jobs import run, sse_events, submit, wait_status


@pytest.fixture(scope="module")
def sd() -> str:
    return str(tiny_sd(MODEL_ROOT))


@pytest.fixture(scope="module")
def lora(sd: str) -> str:
    return str(build_lora(Path(sd), MODEL_ROOT / "sd-lora"))


def _ok(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    job = run(client, body)
    assert job["status"] == "succeeded", job
    return job


def test_images_are_downloadable_pngs_with_parameters_inside(client: httpx.Client, sd: str) -> None:
    body = image_body(sd, prompt=["a red fox", "a blue boat"], num_images=2, width=80, height=64,
                      negative_prompt="blurry", guidance_scale=5.0, seed=11)
    job = _ok(client, body)
    images = job["result"]["images"]
    assert [i["artifact"] for i in images] == [f"images/image-{n}.png" for n in range(4)]
    assert [i["seed"] for i in images] == [11, 12, 13, 14]
    assert [i["prompt"] for i in images] == ["a red fox", "a red fox", "a blue boat", "a blue boat"]
    listed = {a["name"]: a for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()}
    for img in images:
        data = download(client, job["id"], img["artifact"])
        assert sha256(data) == img["sha256"] == listed[img["artifact"]]["sha256"]
        size, meta, parameters = png_info(data)
        assert size == (80, 64) == (img["width"], img["height"])
        assert meta["prompt"] == img["prompt"] and meta["seed"] == img["seed"]
        assert (meta["num_inference_steps"], meta["guidance_scale"], meta["model"]) == (3, 5.0, sd)
        assert parameters.startswith(img["prompt"]) and "Negative prompt: blurry" in parameters
    gen = job["result"]["generation"]
    assert (gen["width"], gen["height"], gen["seed"], gen["denoising_steps"]) == (80, 64, 11, 3)
    assert gen["dtype"] == "float32" and gen["device"] == "cpu"


def test_default_size_comes_from_the_pipeline(client: httpx.Client, sd: str) -> None:
    job = _ok(client, image_body(sd, num_inference_steps=2))
    size, _, _ = png_info(download(client, job["id"], "images/image-0.png"))
    assert size == (64, 64)  # tiny SD: sample_size 32 x VAE scale factor 2


def test_one_progress_event_per_step_in_order_with_linked_previews(client: httpx.Client, sd: str) -> None:
    job = _ok(client, image_body(sd, num_inference_steps=6, preview_every=2, num_images=2))
    progress = [e["data"] for e in sse_events(client, job["id"]) if e["event"] == "progress"]
    assert [(p["done"], p["total"]) for p in progress] == [(n, 6) for n in range(1, 7)]
    linked = [p["preview"] for p in progress if "preview" in p]
    assert linked == ["previews/step-0002.png", "previews/step-0004.png", "previews/step-0006.png"]
    assert job["result"]["previews"] == linked
    for p in progress:
        if "preview" in p:
            assert p["preview_url"] == f"/v1/jobs/{job['id']}/artifacts/{p['preview']}"
            data = client.get(p["preview_url"]).content
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(download(client, job["id"], linked[0]))) as preview:
        assert preview.size == (2 * 32, 32)  # latent resolution, the two images side by side


def test_same_seed_same_bytes_other_seed_other_bytes(client: httpx.Client, sd: str) -> None:
    first, again = _ok(client, image_body(sd, seed=42)), _ok(client, image_body(sd, seed=42))
    other = _ok(client, image_body(sd, seed=43))
    assert digests(first) == digests(again)
    first_png = download(client, first["id"], "images/image-0.png")
    assert first_png == download(client, again["id"], "images/image-0.png")
    assert digests(other) != digests(first)


def test_unseeded_job_records_the_seed_that_reproduces_it(client: httpx.Client, sd: str) -> None:
    body = image_body(sd)
    del body["params"]["seed"]
    drawn = _ok(client, body)
    seed = drawn["result"]["generation"]["seed"]
    assert digests(_ok(client, image_body(sd, seed=seed))) == digests(drawn)


def test_cancel_mid_generation_stops_within_a_step(client: httpx.Client, sd: str) -> None:
    job = submit(client, image_body(sd, width=128, height=128, num_inference_steps=150))
    wait_status(client, job["id"], ("running",))
    deadline = time.monotonic() + 120
    while (client.get(f"/v1/jobs/{job['id']}").json().get("progress") or {}).get("done", 0) < 2:
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    done = wait_status(client, job["id"])
    assert done["status"] == "cancelled", done
    assert 2 <= done["progress"]["done"] < done["progress"]["total"] == 150
    events = sse_events(client, job["id"])
    assert len([e for e in events if e["event"] == "progress"]) == done["progress"]["done"]
    assert events[-1]["event"] == "cancelled"
    assert not [a for a in done["artifacts"] if a["name"].startswith("images/")]
    _ok(client, image_body(sd, num_inference_steps=2))  # the worker and its pipeline carry on


def test_lora_changes_the_image_and_a_job_without_it_restores_the_base(client: httpx.Client, sd: str,
                                                                        lora: str) -> None:
    base = _ok(client, image_body(sd, seed=5))
    with_lora = _ok(client, image_body(sd, seed=5, adapter={"ref": lora, "weight": 1.0}))
    assert digests(with_lora) != digests(base)
    assert with_lora["timings"]["model_load_ms"] == 0  # the base pipeline was not reloaded
    adapter = with_lora["result"]["adapter"]
    assert adapter["ref"] == lora and adapter["weight"] == 1.0
    again = _ok(client, image_body(sd, seed=5, adapter=lora))
    assert again["result"]["adapter"]["cached"] is True and again["result"]["adapter"]["load_ms"] == 0
    assert digests(again) == digests(with_lora)
    half = _ok(client, image_body(sd, seed=5, adapter={"ref": lora, "weight": 0.5}))
    assert digests(half) not in (digests(base), digests(with_lora))
    after = _ok(client, image_body(sd, seed=5))
    assert download(client, after["id"], "images/image-0.png") == download(client, base["id"],
                                                                            "images/image-0.png")
    _, meta, parameters = png_info(download(client, with_lora["id"], "images/image-0.png"))
    assert meta["adapter"] == {"ref": lora, "weight": 1.0} and f"Lora: {lora}:1.0" in parameters


def test_lora_from_another_jobs_artifacts(client: httpx.Client, client_b: httpx.Client, sd: str,
                                          lora: str) -> None:
    from gpuq.common.settings import get_settings
    from gpuq.common.storage import get_store

    # Stands in for a fine-tune job of tenant alpha that left its adapter among its artifacts.
    producer = "f" * 32
    weights = "pytorch_lora_weights.safetensors"
    get_store(get_settings().artifact_dir).put_file("alpha", producer, f"adapter/{weights}", Path(lora) / weights)
    local = _ok(client, image_body(sd, seed=9, adapter=lora))
    by_job = _ok(client, image_body(sd, seed=9, adapter=f"job:{producer}/adapter"))
    # Same weights, so the same pixels; the PNGs differ only in the adapter reference they record.
    assert pixels(download(client, by_job["id"], "images/image-0.png")) == pixels(
        download(client, local["id"], "images/image-0.png"))
    assert digests(by_job) != digests(local)
    resp = client_b.post("/v1/jobs", json=image_body(sd, adapter=f"job:{producer}/adapter"))
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "params.adapter.ref"


def test_adapter_cache_evicts_the_least_recently_used_without_reloading_the_base(
        client: httpx.Client, sd: str, lora: str) -> None:
    copies = []
    for n in range(5):  # the session worker keeps 4 adapters per pipeline
        target = MODEL_ROOT / f"sd-lora-copy-{n}"
        if not target.exists():
            shutil.copytree(lora, target)
        copies.append(str(target))
    first = _ok(client, image_body(sd, seed=3, adapter=copies[0]))
    for path in copies[1:]:
        assert _ok(client, image_body(sd, seed=3, adapter=path))["result"]["adapter"]["cached"] is False
    back = _ok(client, image_body(sd, seed=3, adapter=copies[0]))
    assert back["result"]["adapter"]["cached"] is False  # evicted by the fifth, so loaded again
    assert back["timings"]["model_load_ms"] == 0
    assert digests(back) == digests(first)


@pytest.mark.parametrize(("scheduler", "denoising"), [("euler_a", 3), ("dpmpp_2m_karras", 3), ("heun", 5)])
def test_scheduler_choice_runs_and_reports_every_denoising_step(client: httpx.Client, sd: str, scheduler: str,
                                                                denoising: int) -> None:
    job = _ok(client, image_body(sd, scheduler=scheduler, num_images=2))
    assert job["result"]["generation"]["denoising_steps"] == denoising
    progress = [e["data"] for e in sse_events(client, job["id"]) if e["event"] == "progress"]
    assert [(p["done"], p["total"]) for p in progress] == [(n, denoising) for n in range(1, denoising + 1)]
    assert digests(_ok(client, image_body(sd, scheduler=scheduler, num_images=2))) == digests(job)


def test_memory_options_apply_per_job_and_do_not_leak(client: httpx.Client, sd: str) -> None:
    base = _ok(client, image_body(sd, seed=21))
    saving = _ok(client, image_body(sd, seed=21, attention_slicing=True, vae_slicing=True, vae_tiling=True))
    gen = saving["result"]["generation"]
    assert (gen["attention_slicing"], gen["vae_slicing"], gen["vae_tiling"]) == (True, True, True)
    assert digests(_ok(client, image_body(sd, seed=21))) == digests(base)


def test_directory_that_is_no_diffusion_pipeline_fails_cleanly(client: httpx.Client, sd: str,
                                                               models: dict[str, str]) -> None:
    job = run(client, image_body(models["gpt2"]))
    assert job["status"] == "failed"
    assert job["error"]["type"] == "model_load_error", job["error"]
    _ok(client, image_body(sd, num_inference_steps=1))
