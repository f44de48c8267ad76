"""The diffusion helpers in process, on the real tiny Stable Diffusion pipeline (no worker, no Redis)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gpuq.common.errors import JobCancelled, JobError, ResourceExhausted
from gpuq.common.jobs.image import SCHEDULERS, AdapterParams, StoredImageParams
from gpuq.common.settings import Settings
from tests.conftest import MODEL_ROOT
from tests.support.images import build_lora, tiny_sd
from gpuq.worker.diffusion.adapters import adapter_name
from gpuq.worker.diffusion.memory import call_guarded, check_budget, is_oom
from gpuq.worker.diffusion.outputs import a1111_parameters, card, png_bytes, write_push_folder
from gpuq.worker.diffusion.plan import Plan, make_plan
from gpuq.worker.diffusion.preview import SD_FACTORS, SDXL_FACTORS, factors_for, preview_png
from gpuq.worker.diffusion.schedulers import SCHEDULERS as SCHEDULER_CLASSES
from gpuq.worker.diffusion.schedulers import make_scheduler


@pytest.fixture(scope="module")
def sd() -> Path:
    return tiny_sd(MODEL_ROOT)


@pytest.fixture(scope="module")
def rp(sd: Path) -> Any:
    from gpuq.worker.diffusion.pipeline import loader

    return loader(str(sd), None, "float32", False, Settings(image_adapter_cache_size=2), None)()


def _plan(**changes: Any) -> Plan:
    params = {"prompt": ["a cat"], "num_inference_steps": 2, "guidance_scale": 7.5, "seed": 1, **changes}
    return make_plan(StoredImageParams.model_validate(params), (64, 64))


def _pixels(rp: Any, plan: Plan) -> list[bytes]:
    rp.configure(plan)
    images, _ = rp.generate(plan, lambda pipe, step, t, tensors: {})
    return [img.tobytes() for img in images]


def test_every_listed_scheduler_maps_to_a_class_and_denoises_a_batch(rp: Any) -> None:
    assert set(SCHEDULER_CLASSES) == set(SCHEDULERS)
    for name in SCHEDULERS:
        plan = _plan(scheduler=name, num_images=2)
        first = _pixels(rp, plan)
        assert len(first) == 2 and first[0] != first[1]
        assert _pixels(rp, plan) == first, name  # fresh scheduler state per job: reproducible
        assert type(rp.pipe.scheduler).__name__ == SCHEDULER_CLASSES[name][0]


def test_default_scheduler_is_a_fresh_copy_of_the_pipelines_own(rp: Any) -> None:
    fresh = make_scheduler(None, rp.base_scheduler)
    assert fresh is not rp.base_scheduler and type(fresh) is type(rp.base_scheduler)
    assert dict(fresh.config) == dict(rp.base_scheduler.config)


def test_lora_cache_evicts_with_delete_adapters_and_disabled_lora_restores_the_base(rp: Any, sd: Path,
                                                                                      tmp_path: Path) -> None:
    base = _pixels(rp, _plan())
    loras = [build_lora(sd, tmp_path / f"lora-{n}", seed=n) for n in range(3)]
    weights = [p / "pytorch_lora_weights.safetensors" for p in loras]
    uses = [rp.adapters.activate(w, 1.0) for w in weights]
    assert [u.cached for u in uses] == [False, False, False]
    assert rp.adapters.evictions == 1 and rp.adapters.loaded == [uses[1].name, uses[2].name]
    assert sorted(rp.pipe.get_list_adapters()["unet"]) == sorted(rp.adapters.loaded)
    lora_out = _pixels(rp, _plan())
    assert lora_out != base
    assert rp.adapters.activate(weights[2], 1.0).cached is True
    rp.adapters.deactivate()
    assert _pixels(rp, _plan()) == base


def test_unloadable_adapter_fails_the_job_and_leaves_nothing_behind(rp: Any, tmp_path: Path) -> None:
    bad = tmp_path / "pytorch_lora_weights.safetensors"
    bad.write_bytes(b"not safetensors at all")
    with pytest.raises(JobError, match="LoRA adapter could not be loaded"):
        rp.adapters.activate(bad, 1.0)
    assert adapter_name(bad) not in rp.adapters.loaded
    assert sorted(rp.pipe.get_list_adapters().get("unet", [])) == sorted(rp.adapters.loaded)


def test_preview_is_a_linear_projection_at_latent_size() -> None:
    import torch
    from PIL import Image

    png = preview_png(torch.zeros(2, 4, 8, 6), SD_FACTORS, (0.0, 0.0, 0.0))
    assert png is not None
    with Image.open(io.BytesIO(png)) as img:
        assert img.size == (12, 8)  # two 6x8 latents side by side
        assert img.getpixel((0, 0)) == (127, 127, 127)  # zero latents -> mid grey
    assert preview_png(torch.zeros(1, 16, 8, 8), SD_FACTORS, (0.0, 0.0, 0.0)) is None


def test_sdxl_latent_space_gets_its_own_factors() -> None:
    sdxl = SimpleNamespace(vae=SimpleNamespace(config=SimpleNamespace(scaling_factor=0.13025)))
    sd15 = SimpleNamespace(vae=SimpleNamespace(config=SimpleNamespace(scaling_factor=0.18215)))
    assert factors_for(sdxl)[0] == SDXL_FACTORS and factors_for(sd15)[0] == SD_FACTORS


def test_png_carries_parameters_and_is_deterministic() -> None:
    from PIL import Image

    lora = AdapterParams(ref="org/lora", weight=0.7)
    meta = _plan(negative_prompt="blurry").image_meta(0, "org/model", lora)
    image = Image.new("RGB", (16, 8), (10, 20, 30))
    data = png_bytes(image, meta)
    assert data == png_bytes(image, meta)
    with Image.open(io.BytesIO(data)) as back:
        assert json.loads(back.text["gpuq"]) == meta
        assert back.text["parameters"] == a1111_parameters(meta)
    assert a1111_parameters(meta).splitlines() == [
        "a cat", "Negative prompt: blurry",
        ("Steps: 2, Sampler: default, CFG scale: 7.5, Seed: 1, Size: 64x64, Model: org/model, "
         "Lora: org/lora:0.7")]


def test_push_folder_layout_and_card(tmp_path: Path) -> None:
    plan = _plan(prompt=["a | cat", "a dog"])
    rows = [{"file_name": f"images/image-{i}.png", **plan.image_meta(i, "org/model", None)} for i in range(2)]
    readme = card("job1", "org/model", "dataset", rows)
    root = write_push_folder(tmp_path, "runs/one", {r["file_name"]: b"png" for r in rows}, rows, readme)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["runs/one/README.md", "runs/one/images/image-0.png", "runs/one/images/image-1.png",
                     "runs/one/metadata.jsonl"]
    assert "task_categories:\n- text-to-image" in readme and "a \\| cat" in readme and "| 2 |" in readme
    lines = (root / "runs/one/metadata.jsonl").read_text().splitlines()
    assert [json.loads(line)["seed"] for line in lines] == [1, 2]


def test_out_of_memory_becomes_resource_exhausted_other_errors_pass_through() -> None:
    import torch

    def oom() -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(ResourceExhausted, match="out of memory"):
        call_guarded(oom)
    assert is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
                               ": you tried to allocate 68719476736 bytes."))
    assert is_oom(MemoryError()) and not is_oom(ValueError("out of range"))
    for exc in (JobCancelled("cancelled while running"), ValueError("bad")):
        with pytest.raises(type(exc)):
            call_guarded(lambda exc=exc: (_ for _ in ()).throw(exc))


def test_memory_budget_counts_guidance_as_a_doubled_batch() -> None:
    settings = Settings(image_memory_budget_pixels=64 * 64 * 2)
    check_budget(64, 64, 2, False, settings)
    check_budget(64, 64, 1, True, settings)
    with pytest.raises(ResourceExhausted, match="GPUQ_IMAGE_MEMORY_BUDGET_PIXELS"):
        check_budget(64, 64, 2, True, settings)
    check_budget(4096, 4096, 8, True, Settings())  # unset: no guard
