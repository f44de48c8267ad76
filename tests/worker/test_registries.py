"""The registries hold against each other: kinds and handlers, inference tasks on both sides, stored params."""
from __future__ import annotations

import importlib

import pytest

from gpuq.common.jobs import inference as inference_kind
from gpuq.common.jobs.registry import all_specs, get_spec
from gpuq.worker.handlers import handler_kinds


def test_every_registered_kind_has_a_handler_and_every_handler_a_kind() -> None:
    kinds = {spec.kind for spec in all_specs()}
    assert kinds == set(handler_kinds())
    for kind in kinds:
        module = importlib.import_module(f"gpuq.worker.handlers.{kind}")
        assert callable(getattr(module, "run", None)), f"handler {kind} has no run(ctx)"


def test_every_inference_task_is_registered_on_both_sides() -> None:
    from gpuq.worker.inference import TASKS, get_task

    assert set(TASKS) == set(inference_kind.TASK_NAMES)
    for alias, name in inference_kind.ALIASES.items():
        assert get_task(alias) is TASKS[name]
    assert set(inference_kind.TASKS) == set(TASKS) | set(inference_kind.ALIASES)


def test_every_accepted_task_can_be_preloaded() -> None:
    from gpuq.worker.handlers.inference import PRELOAD_TASKS

    assert PRELOAD_TASKS == frozenset(inference_kind.TASKS)


def test_every_kind_declares_a_stored_params_model() -> None:
    for spec in all_specs():
        assert spec.stored_model is not spec.params_model, spec.kind


@pytest.mark.parametrize("kind, stored", [
    ("synthetic", {"steps": 2}),
    ("inference", {"task": "text-generation", "adapter": {"repo": "org/lora", "sealed_token": "s"}}),
    ("batch_inference", {"data": {"path": "/data/rows.parquet", "max_rows": 5}, "inference": {"task": "ner"}}),
    ("tokenizer", {"algorithm": "bpe", "data": {"file_id": "f" * 32}, "sealed_hub_token": "s"}),
    ("finetune", {"data": {"file_id": "f" * 32}, "push_to_hub": {"repo_id": "org/x", "sealed_token": "s"}}),
    ("evaluate", {"task_type": "causal-lm", "metrics": ["bleu"], "data": {"file_id": "f" * 32},
                  "adapter": {"job": "a" * 32}}),
    ("image", {"prompt": ["a cat"], "adapter": {"ref": "job:" + "a" * 32, "source": "job", "job_id": "a" * 32,
                                                 "artifact": "lora.safetensors"}}),
])
def test_stored_params_load_typed_and_ignore_keys_of_older_records(kind: str, stored: dict[str, object]) -> None:
    params = get_spec(kind).load_params({**stored, "dropped_in_a_later_release": 1})
    assert not hasattr(params, "dropped_in_a_later_release")
    dumped = params.model_dump(exclude_none=True)
    for key, value in stored.items():
        if not isinstance(value, dict):
            assert dumped[key] == value


def test_inference_params_load_as_the_task_member() -> None:
    params = get_spec("inference").load_params({"task": "sentiment-analysis"})
    assert isinstance(params, inference_kind.TextClassificationParams)
    assert params.top_k == 1 and params.function_to_apply == "default"  # the model's defaults, not the handler's
