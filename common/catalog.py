"""The model catalog: every model this deployment can serve, shaped as OpenAI's model list plus gpuq's fields.

Four sources, merged by id (a model found twice keeps its first entry and gains what the later source knows):

- ``root``: a model directory under the model roots (``config.json``, diffusers' ``model_index.json`` or a PEFT
  ``adapter_config.json``); its id is its path relative to the root, the short name a job names it by
  (``gpt2``, ``org/name``), the first root winning as in the resolver;
- ``resident``: a model a live worker holds (workers publish their resident references, worker/affinity.py);
  a resident directory under a root is the root's entry with ``resident_on`` filled in;
- ``cache``: a Hub model in the HF cache this process can see (``models--org--name/snapshots/<sha>``);
- ``fine-tune``: the tenant's finished fine-tunes, as adapters on their base, ids ``ft:<base>:<tenant>:<job id>``.

Nothing here imports torch or huggingface_hub: the API reads config files and directory listings only.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from gpuq.common.refs.models import local_models
from gpuq.common.schemas import JobRecord
from gpuq.common.settings import Settings
from pydantic import BaseModel, Field

Source = Literal["root", "resident", "cache", "fine-tune"]
Kind = Literal["model", "diffusers", "adapter"]
MARKERS = ("config.json", "model_index.json", "adapter_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx")
FT_PREFIX = "ft:"
FT_TASKS = {"causal-lm": "text-generation", "sequence-classification": "text-classification"}
# What a transformers architecture name ends with -> the inference tasks it serves.
ARCHITECTURE_TASKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ForSequenceClassification", ("text-classification", "zero-shot-classification")),
    ("ForTokenClassification", ("token-classification",)),
    ("ForQuestionAnswering", ("question-answering",)),
    ("ForMaskedLM", ("fill-mask", "feature-extraction")),
    ("ForCausalLM", ("text-generation",)),
    ("LMHeadModel", ("text-generation",)),
    ("ForConditionalGeneration", ("text2text-generation", "summarization", "translation")),
    ("ForImageClassification", ("image-classification",)),
    ("Model", ("feature-extraction",)),
)


class ModelEntry(BaseModel):
    """One model: OpenAI's ``{id, object, created, owned_by}`` plus where gpuq finds it and what it serves."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    source: Source
    path: str | None = None  # the directory (roots, cache)
    model_root: str | None = None  # the root it was found under
    kind: Kind = "model"
    tasks: list[str] = Field(default_factory=list)  # inference tasks it can serve, when its config says
    resident_on: list[str] = Field(default_factory=list)  # live workers holding it now
    size_bytes: int | None = None  # weight files on disk
    parent: str | None = None  # fine-tunes: the base model's id
    job_id: str | None = None  # fine-tunes: the job that trained it


class ModelList(BaseModel):
    """``GET /v1/models``: OpenAI's list shape."""

    object: Literal["list"] = "list"
    data: list[ModelEntry]


def tasks_for(directory: Path) -> tuple[Kind, list[str]]:
    """(kind, inference tasks) a model directory can serve, read from its config files."""
    if (directory / "model_index.json").is_file():
        return "diffusers", []
    if (directory / "adapter_config.json").is_file() and not (directory / "config.json").is_file():
        return "adapter", []
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return "model", []
    tasks: list[str] = []
    for arch in config.get("architectures") or []:
        for suffix, served in ARCHITECTURE_TASKS:
            if str(arch).endswith(suffix):
                tasks += [t for t in served if t not in tasks]
                break
    return "model", tasks


def _size(directory: Path) -> int:
    total = 0
    for path in directory.rglob("*"):
        if path.suffix in WEIGHT_SUFFIXES and path.is_file():
            total += path.stat().st_size
    return total


def _created(directory: Path) -> int:
    for marker in MARKERS:
        try:
            return int((directory / marker).stat().st_mtime)
        except OSError:
            continue
    return int(time.time())


def directory_entry(ref: str, directory: Path, source: Source, owner: str, root: Path | None) -> ModelEntry:
    """The entry of one model directory."""
    kind, tasks = tasks_for(directory)
    return ModelEntry(id=ref, created=_created(directory), owned_by=owner, source=source, path=str(directory),
                      model_root=str(root) if root else None, kind=kind, tasks=tasks,
                      size_bytes=_size(directory))


def root_entries(settings: Settings) -> list[ModelEntry]:
    """Entries for the model directories under the roots, by the names the resolver resolves them by (the
    first root wins a name; the stores are never listed)."""
    return [directory_entry(m.name, m.path, "root", "gpuq", m.root) for m in local_models(settings)]


def cache_entries(hub_cache: Path | None) -> list[ModelEntry]:
    """Hub models in the HF cache (``models--org--name``), each at its newest snapshot."""
    if hub_cache is None or not hub_cache.is_dir():
        return []
    out = []
    for repo in sorted(hub_cache.glob("models--*")):
        snapshots = sorted((p for p in (repo / "snapshots").glob("*") if p.is_dir()),
                           key=lambda p: p.stat().st_mtime)
        if not snapshots:
            continue
        repo_id = repo.name.removeprefix("models--").replace("--", "/")
        owner = repo_id.partition("/")[0] if "/" in repo_id else "huggingface"
        out.append(directory_entry(repo_id, snapshots[-1], "cache", owner, None))
    return out


def fine_tune_id(base: str, tenant: str, job_id: str) -> str:
    """``ft:<base>:<tenant>:<job id>``: the model id of a finished fine-tune."""
    return f"{FT_PREFIX}{base}:{tenant}:{job_id}"


def parse_fine_tune_id(model_id: str) -> tuple[str, str, str] | None:
    """(base, tenant, job id) of an ``ft:`` id, or None; the base may itself hold colons."""
    if not model_id.startswith(FT_PREFIX):
        return None
    base, sep1, rest = model_id[len(FT_PREFIX):].rpartition(":")
    base, sep2, tenant = base.rpartition(":")
    if not (sep1 and sep2 and base and tenant and rest):
        return None
    return base, tenant, rest


def fine_tune_entries(jobs: Iterable[JobRecord], base_ids: dict[str, str]) -> list[ModelEntry]:
    """Finished fine-tunes as adapter models on their base (``base_ids``: model reference -> catalog id)."""
    out = []
    for job in jobs:
        base = base_ids.get(job.model, job.model)
        out.append(ModelEntry(id=fine_tune_id(base, job.tenant, job.id), created=int(job.timings.finished_at or 0),
                              owned_by=job.tenant, source="fine-tune", kind="adapter", parent=base, job_id=job.id,
                              tasks=[FT_TASKS.get(str(job.params.get("task_type")), "text-generation")]))
    return out


def merge(entries: list[ModelEntry], resident: dict[str, list[str]]) -> list[ModelEntry]:
    """One entry per id, resident workers attached; resident models no other source knows get their own."""
    by_id: dict[str, ModelEntry] = {}
    by_path: dict[str, ModelEntry] = {}
    for entry in entries:
        if entry.id in by_id:
            continue
        by_id[entry.id] = entry
        if entry.path:
            by_path.setdefault(entry.path, entry)
    for ref, nodes in sorted(resident.items()):
        found = by_path.get(ref) or by_id.get(ref)
        if found is None:
            found = by_id[ref] = ModelEntry(id=ref, created=int(time.time()), owned_by="gpuq", source="resident")
        found.resident_on = sorted(set(found.resident_on) | set(nodes))
    return list(by_id.values())
