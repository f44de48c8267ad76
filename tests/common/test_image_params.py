"""Image params outside HTTP: weight-file choice, job references, and what the stored params look like."""
from __future__ import annotations

from pathlib import Path

import pytest

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.image import SCHEDULERS, SchedulerName, pick_weight_file, split_job_ref
from gpuq.common.jobs.registry import Submitter, get_spec
from gpuq.common.settings import Settings


@pytest.mark.parametrize(("names", "weight_name", "folder", "chosen"), [
    (["pytorch_lora_weights.safetensors"], None, "", "pytorch_lora_weights.safetensors"),
    (["a.safetensors", "pytorch_lora_weights.safetensors"], None, "", "pytorch_lora_weights.safetensors"),
    (["only.safetensors", "README.md"], None, "", "only.safetensors"),
    (["a.safetensors", "b.safetensors"], None, "", None),
    (["a.safetensors", "b.safetensors"], "b.safetensors", "", "b.safetensors"),
    (["README.md"], None, "", None),
    (["lora/x.safetensors", "y.safetensors", "lora/deep/z.safetensors"], None, "lora", "lora/x.safetensors"),
    (["lora/x.safetensors"], "y.safetensors", "lora", None),
])
def test_weight_file_is_the_named_the_default_or_the_only_one(names: list[str], weight_name: str | None,
                                                               folder: str, chosen: str | None) -> None:
    assert pick_weight_file(names, weight_name, folder) == chosen


def test_job_references_split_and_refuse_traversal() -> None:
    assert split_job_ref("job:abc123") == ("abc123", "")
    assert split_job_ref("job:abc123/adapter") == ("abc123", "adapter")
    for bad in ("job:", "job:../x", "job:abc/../../etc", "job:abc/"):
        with pytest.raises(InvalidInput):
            split_job_ref(bad)


def test_scheduler_names_match_the_declared_literal() -> None:
    assert SCHEDULERS == SchedulerName.__args__  # type: ignore[attr-defined]


def test_stored_params_normalise_the_prompt_and_seal_the_push_token(tmp_path: Path) -> None:
    settings = Settings(model_roots=str(tmp_path), data_dir=tmp_path)
    lora = tmp_path / "lora"
    lora.mkdir()
    valid = get_spec("image").validate(str(tmp_path), None, {
        "prompt": "a cat", "adapter": str(lora),
        "push_to_hub": {"repo_id": "someone/pics", "token": "hf_secret_token", "repo_type": "dataset"}},
        Submitter("alpha", settings))
    params = valid.params
    assert params["prompt"] == ["a cat"]
    assert params["adapter"] == {"ref": str(lora.resolve()), "weight": 1.0, "source": "local"}
    assert "hf_secret_token" not in repr(params)
    assert params["push_to_hub"]["sealed_token"].startswith("sealed:")
    assert valid.inputs is None
