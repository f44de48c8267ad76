"""The tiny dev models load through the real transformers / diffusers entry points and act like real ones."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gpuq.common.errors import InvalidInput
from gpuq.worker.devmodels import (
    BUILDERS,
    NER_LABELS,
    NLI_LABELS,
    VIT_LABELS,
    build_all,
    build_tiny_bert_classifier,
    ensure_built,
    is_built,
    main,
    packaged_minilm_path,
)

PROMPT = "Alice visits a cat in Paris"


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every dev model, built once for this module's session."""
    return build_all(tmp_path_factory.mktemp("devmodels"))


@pytest.fixture(scope="session")
def sd_pipe(models: dict[str, Path]) -> Any:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(models["sd"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline(task: str, path: Path) -> Any:
    from transformers import pipeline

    return pipeline(task, model=str(path))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _sd_image(pipe: Any, seed: int, **kwargs: Any) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(seed)
    out = pipe("a photo of a cat by the lake", num_inference_steps=5, generator=generator, **kwargs)
    return np.asarray(out.images[0])


def test_build_all_builds_every_named_model_and_marks_it_finished(models: dict[str, Path]) -> None:
    assert (
        set(models)
        == set(BUILDERS)
        == {"gpt2", "gpt2-chat", "bert-sentiment", "bert-ner", "bert-mlm", "bert-qa", "bert-nli", "t5", "vit", "sd"}
    )
    for name, path in models.items():
        assert path.name == name and is_built(path)
    assert not list(models["gpt2"].parent.glob("*.tmp-*")), "scratch dirs left behind"


def test_build_all_is_byte_for_byte_deterministic(models: dict[str, Path], tmp_path: Path) -> None:
    again = build_all(tmp_path)
    for name in BUILDERS:
        assert _tree(again[name]) == _tree(models[name]), name


def test_build_all_skips_finished_models_and_rebuilds_torn_ones(tmp_path: Path) -> None:
    path = build_all(tmp_path, ["gpt2"])["gpt2"]
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert build_all(tmp_path, ["gpt2"])["gpt2"] == path
    assert weights.stat().st_mtime_ns == stamp

    (path / ".gpuq-devmodel").unlink()  # as if the build had died before finishing
    weights.unlink()
    build_all(tmp_path, ["gpt2"])
    assert weights.is_file() and is_built(path)


def test_concurrent_builders_of_one_model_build_it_once(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        paths = list(pool.map(lambda _: ensure_built(tmp_path, "bert-qa"), range(3)))
    assert paths == [tmp_path / "bert-qa"] * 3 and is_built(paths[0])
    assert not list(tmp_path.glob("*.tmp-*"))


def test_building_leaves_the_callers_torch_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    build_all(tmp_path, ["vit"])
    assert torch.equal(torch.rand(3), expected)


def test_unknown_model_name_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        build_all(tmp_path, ["gpt5"])


def test_main_builds_the_named_models_and_prints_their_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path), "--only", "bert-ner"]) == 0
    assert capsys.readouterr().out.strip() == f"bert-ner\t{tmp_path / 'bert-ner'}"


def test_gpt2_generates_greedy_sampled_and_beam_text(models: dict[str, Path]) -> None:
    generate = _pipeline("text-generation", models["gpt2"])
    assert generate.tokenizer.pad_token == generate.tokenizer.eos_token == "<|endoftext|>"
    greedy = generate(PROMPT, max_new_tokens=6, do_sample=False)
    assert greedy == generate(PROMPT, max_new_tokens=6, do_sample=False)
    for kwargs in ({"do_sample": False}, {"do_sample": True, "top_k": 50}, {"num_beams": 2}):
        [out] = generate(PROMPT, max_new_tokens=6, **kwargs)
        assert out["generated_text"].startswith(PROMPT)
        assert len(out["generated_text"]) > len(PROMPT)


def test_bert_classifier_serves_text_classification_and_sentiment_analysis(models: dict[str, Path]) -> None:
    for task in ("text-classification", "sentiment-analysis"):
        results = _pipeline(task, models["bert-sentiment"])(["What a lovely day", "The movie was awful."])
        assert [r["label"] in {"NEGATIVE", "POSITIVE"} for r in results] == [True, True]
        assert all(0.0 < r["score"] <= 1.0 for r in results)


def test_bert_classifier_takes_custom_labels(tmp_path: Path) -> None:
    path = build_tiny_bert_classifier(tmp_path / "topics", labels=("sports", "music", "food"))
    scores = _pipeline("text-classification", path)("Bob builds a song", top_k=None)
    assert sorted(s["label"] for s in scores) == ["food", "music", "sports"]
    assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-5)


def test_bert_token_classifier_serves_ner_with_offsets(models: dict[str, Path]) -> None:
    text = "Alice lives in Paris"
    tokens = _pipeline("ner", models["bert-ner"])(text)
    assert tokens and all(t["entity"] in NER_LABELS for t in tokens)
    grouped = _pipeline("token-classification", models["bert-ner"])(text, aggregation_strategy="simple")
    for entity in grouped:
        assert entity["entity_group"] in {"PER", "LOC"}
        assert text[entity["start"] : entity["end"]].lower() == entity["word"]


def test_bert_masked_lm_fills_the_mask(models: dict[str, Path]) -> None:
    results = _pipeline("fill-mask", models["bert-mlm"])("Alice lives in [MASK].", top_k=3)
    assert len(results) == 3
    assert all("[MASK]" not in r["sequence"] and r["token_str"] for r in results)


def test_bert_qa_yields_start_and_end_logits_over_the_context(models: dict[str, Path]) -> None:
    # transformers 5 removed the question-answering pipeline; model and fast tokenizer still load normally.
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["bert-qa"])
    model = AutoModelForQuestionAnswering.from_pretrained(models["bert-qa"])
    enc = tokenizer(
        "Where does Alice work?", "Alice works in Paris.", return_tensors="pt", return_offsets_mapping=True
    )
    offsets = enc.pop("offset_mapping")
    with torch.no_grad():
        out = model(**enc)
    assert out.start_logits.shape == out.end_logits.shape == enc["input_ids"].shape
    assert offsets.shape[:2] == enc["input_ids"].shape
    assert enc.sequence_ids(0).count(1) > 0


def test_bert_nli_serves_zero_shot_classification(models: dict[str, Path]) -> None:
    classify = _pipeline("zero-shot-classification", models["bert-nli"])
    assert classify.model.config.label2id == {label: i for i, label in enumerate(NLI_LABELS)}
    result = classify("Alice visits Paris", candidate_labels=["travel", "food", "music"])
    assert sorted(result["labels"]) == ["food", "music", "travel"]
    assert sum(result["scores"]) == pytest.approx(1.0, abs=1e-5)


def test_t5_generates_from_task_prefixes(models: dict[str, Path]) -> None:
    # The summarization / translation pipelines are gone in transformers 5; generate() is the path.
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["t5"])
    model = AutoModelForSeq2SeqLM.from_pretrained(models["t5"])
    params = model.config.task_specific_params
    prompts = [params[task]["prefix"] + PROMPT for task in ("summarization", "translation_en_to_fr")]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=6, num_beams=2)
    assert out.shape[0] == 2 and out.shape[1] <= 7
    assert all(isinstance(text, str) for text in tokenizer.batch_decode(out, skip_special_tokens=True))
    assert tokenizer.decode(tokenizer(PROMPT)["input_ids"], skip_special_tokens=True) == PROMPT


def test_vit_classifies_a_pil_image(models: dict[str, Path]) -> None:
    from PIL import Image

    image = Image.new("RGB", (50, 40), (200, 40, 40))
    results = _pipeline("image-classification", models["vit"])(image, top_k=len(VIT_LABELS))
    assert sorted(r["label"] for r in results) == sorted(VIT_LABELS)
    assert sum(r["score"] for r in results) == pytest.approx(1.0, abs=1e-5)


def test_sd_makes_a_64px_image_and_calls_back_every_step(sd_pipe: Any) -> None:
    steps: list[int] = []

    def on_step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        steps.append(step)
        return kwargs

    pixels = _sd_image(sd_pipe, 0, callback_on_step_end=on_step_end)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert steps == [0, 1, 2, 3, 4]
    assert pixels.std() > 0


def test_sd_same_seed_gives_same_pixels_and_other_seed_differs(sd_pipe: Any) -> None:
    first = _sd_image(sd_pipe, 7)
    assert np.array_equal(first, _sd_image(sd_pipe, 7))
    assert not np.array_equal(first, _sd_image(sd_pipe, 8))


def test_sd_loads_through_auto_pipeline_for_text2image(models: dict[str, Path], sd_pipe: Any) -> None:
    from diffusers import AutoPipelineForText2Image, StableDiffusionPipeline

    auto = AutoPipelineForText2Image.from_pretrained(models["sd"])
    auto.set_progress_bar_config(disable=True)
    assert isinstance(auto, StableDiffusionPipeline)
    assert np.array_equal(_sd_image(auto, 3, height=32, width=32), _sd_image(sd_pipe, 3, height=32, width=32))


def test_sd_accepts_a_lora_adapter_and_unloads_it(models: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(models["sd"])
    pipe.set_progress_bar_config(disable=True)
    base = _sd_image(pipe, 1)
    torch.manual_seed(0)
    pipe.unet.add_adapter(LoraConfig(r=2, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v"]))
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(pipe.unet))

    fresh = StableDiffusionPipeline.from_pretrained(models["sd"])
    fresh.set_progress_bar_config(disable=True)
    fresh.load_lora_weights(tmp_path, adapter_name="tiny")
    assert not np.array_equal(_sd_image(fresh, 1), base)
    fresh.unload_lora_weights()
    assert np.array_equal(_sd_image(fresh, 1), base)


def test_packaged_minilm_embeds_to_384_dims() -> None:
    path = packaged_minilm_path()
    assert (path / "config.json").is_file()
    [features] = _pipeline("feature-extraction", path)("Alice visits Paris")
    assert len(features[0]) == 384
