"""The reference resolver on a real directory tree: lookup order, containment, the stores, the catalog."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpuq.common.errors import InvalidInput
from gpuq.common.refs import catalog_name, local_models, resolve_data_path, resolve_local_dir, resolve_model
from gpuq.common.settings import Settings


def _model(path: Path, marker: str = "config.json") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / marker).write_text("{}")
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> tuple[Path, Settings]:
    """Two roots; the second holds the stores (one data volume); a pipeline, an adapter, a symlink out."""
    first, volume = tmp_path / "models", tmp_path / "volume"
    _model(first / "gpt2")
    _model(volume / "gpt2")  # shadowed by the first root's
    _model(volume / "org" / "name")
    sd = _model(volume / "tiny-sd", "model_index.json")
    _model(sd / "unet")  # a pipeline's component, not a model of its own
    _model(volume / "loras" / "style", "adapter_config.json")
    _model(volume / "artifacts" / "beta" / ("0" * 32) / "merged")  # a fine-tune's merged model, in the store
    _model(volume / ".cache" / "hidden")
    _model(tmp_path / "outside")
    (volume / "escape").symlink_to(tmp_path / "outside")
    (volume / "also-gpt2").symlink_to(first / "gpt2")
    (volume / "data").mkdir()
    (volume / "data" / "rows.csv").write_text("text\nx\n")
    (volume / "files" / "beta" / "f").mkdir(parents=True)
    (volume / "files" / "beta" / "f" / "data.csv").write_text("text\nsecret\n")
    settings = Settings(model_roots=[first, volume], artifact_dir=volume / "artifacts", dataset_roots=[])
    return tmp_path, settings


def test_names_resolve_under_the_roots_in_order_then_go_to_the_hub(tree: tuple[Path, Settings]) -> None:
    base, s = tree
    assert resolve_model("gpt2", s).value == str((base / "models" / "gpt2").resolve())
    assert resolve_model("./org/name", s).value == str((base / "volume" / "org" / "name").resolve())
    assert resolve_model("also-gpt2", s).value == str((base / "models" / "gpt2").resolve())  # into another root
    hub = resolve_model("other/model", s)
    assert (hub.source, hub.value) == ("hub", "other/model")


def test_nothing_is_resolved_against_the_working_directory(tree: tuple[Path, Settings],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    base, s = tree
    monkeypatch.chdir(base)  # "outside" and "volume/org/name" now exist relative to the cwd
    assert resolve_model("outside", s).source == "hub"
    with pytest.raises(InvalidInput, match="not a model directory"):
        resolve_model("volume/org/name", s)


@pytest.mark.parametrize(("ref", "why"), [
    ("escape", "outside GPUQ_MODEL_ROOTS"), ("/etc", "outside GPUQ_MODEL_ROOTS"),
    ("../outside", "climb"), ("org/../gpt2", "climb"), ("artifacts/beta", "store"),
    ("sub/dir/absent", "not a model directory"), ("a\x00b", "control character U\\+0000"),
])
def test_bad_model_references_are_refused_naming_the_field(tree: tuple[Path, Settings], ref: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why) as caught:
        resolve_model(ref, tree[1], field="params.x")
    assert caught.value.field == "params.x"


def test_an_absolute_path_into_a_store_is_refused_though_a_root_holds_it(tree: tuple[Path, Settings]) -> None:
    base, s = tree
    with pytest.raises(InvalidInput, match="store"):
        resolve_model(str(base / "volume" / "artifacts" / "beta" / ("0" * 32) / "merged"), s)
    with pytest.raises(InvalidInput, match="store"):
        resolve_data_path(str(base / "volume" / "files" / "beta" / "f" / "data.csv"), s, "params.data.path")
    assert resolve_data_path("data/rows.csv", s, "params.data.path") == (base / "volume" / "data" / "rows.csv").resolve()


def test_a_relative_name_that_is_no_root_name_suggests_the_catalog_one(tree: tuple[Path, Settings]) -> None:
    with pytest.raises(InvalidInput, match="did you mean 'gpt2'"):
        resolve_model("var/models/gpt2", tree[1])
    with pytest.raises(InvalidInput, match="did you mean 'loras/style'"):
        resolve_local_dir("adapters/style", tree[1], "params.adapter.path")


def test_the_catalog_lists_each_model_once_by_a_name_that_resolves_to_it(tree: tuple[Path, Settings]) -> None:
    s = tree[1]
    catalog = {m.name: (m.kind, m.path) for m in local_models(s)}
    assert sorted(catalog) == ["gpt2", "loras/style", "org/name", "tiny-sd"]
    assert catalog["tiny-sd"][0] == "pipeline" and catalog["loras/style"][0] == "adapter"
    for name, (_, path) in catalog.items():
        assert resolve_model(name, s).value == str(path)
        assert catalog_name(path, s) == name


def test_a_root_that_is_itself_a_model_is_listed_by_its_path(tmp_path: Path) -> None:
    root = _model(tmp_path / "minilm")
    s = Settings(model_roots=[root], artifact_dir=tmp_path / "artifacts")
    [entry] = local_models(s)
    assert entry.name == str(root.resolve()) and resolve_model(entry.name, s).value == str(root.resolve())
    assert os.path.isabs(entry.name)
