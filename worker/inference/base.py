"""What every inference task implements, and the loaders they share.

A task splits a job's work in four steps so the batcher can merge jobs: ``prepare`` (per job, on the job's own
thread: decode and check inputs, so one bad input fails only its job), ``forward`` (one pass over items from
one or more jobs that share ``group``, on the batcher's thread), ``finish`` (per item again, with the job's
own params). Tasks with the same ``loader`` share one resident model (a NLI model serves text-classification
and zero-shot-classification from one copy).
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.inference import TaskParamsBase

# Called by ``forward`` while generating: {row of the pass: new text}.
Stream = Callable[[dict[int, str]], None]


@dataclass(frozen=True)
class LoadSpec:
    """Which weights to load, and how."""

    model: str
    revision: str | None
    dtype: str


class InferenceTask(Protocol):
    """One inference task (see the module docstring for the four steps)."""

    name: str
    loader: str

    def load(self, spec: LoadSpec) -> Any: ...

    def split(self, inputs: Any) -> tuple[list[Any], bool]: ...

    def group(self, params: TaskParamsBase) -> Hashable: ...

    def prepare(self, resident: Any, inputs: list[Any], params: TaskParamsBase) -> list[Any]: ...

    def forward(self, resident: Any, items: list[Any], params: TaskParamsBase,
                stream: Stream | None) -> list[Any]: ...

    def finish(self, resident: Any, raw: Any, params: TaskParamsBase) -> Any: ...


_REGISTRY: dict[str, InferenceTask] = {}
T = TypeVar("T", bound="InferenceTask")


def register_task(task: T) -> T:
    """Register an inference task under its name (module import time; ``gpuq.worker.inference`` imports every
    module of the package, so a new task is one module with one ``register_task`` call)."""
    if task.name in _REGISTRY:
        raise RuntimeError(f"inference task {task.name!r} registered twice")
    _REGISTRY[task.name] = task
    return task


def registered() -> dict[str, InferenceTask]:
    """Every registered task by name."""
    return dict(_REGISTRY)


@dataclass
class TextModel:
    """A tokenizer (or processor) and its model, resident together."""

    tokenizer: Any
    model: Any

    @property
    def device(self) -> Any:
        return self.model.device


def load_pretrained(spec: LoadSpec, auto_class: str, processor: str = "AutoTokenizer") -> TextModel:
    """``<processor>.from_pretrained`` + ``<auto_class>.from_pretrained`` on the worker's device, in eval
    mode, from the checked directory ``spec.model`` resolves to (a root's, or the Hub snapshot's)."""
    import transformers

    from gpuq.worker import hub
    from gpuq.worker.device import device, torch_dtype
    from gpuq.worker.sources import model_dir

    folder = str(model_dir(spec.model, spec.revision, hub.pull_token(None)))
    common: dict[str, Any] = {"trust_remote_code": False}
    tokenizer = getattr(transformers, processor).from_pretrained(folder, **common)
    model_class = getattr(transformers, auto_class)
    model = model_class.from_pretrained(folder, dtype=torch_dtype(spec.dtype), **common)
    return TextModel(tokenizer, model.to(device()).eval())


def no_grad() -> Any:
    """Context for every forward pass."""
    import torch

    return torch.inference_mode()


class SimpleTask:
    """Defaults for tasks whose inputs are plain texts and whose forward pass ignores per-job params."""

    name = ""
    loader = ""
    auto_class = ""

    def load(self, spec: LoadSpec) -> Any:
        return load_pretrained(spec, self.auto_class)

    def split(self, inputs: Any) -> tuple[list[Any], bool]:
        """The job's inputs as a list, and whether it gave a single one (then it gets a single result)."""
        return (list(inputs), False) if isinstance(inputs, list) else ([inputs], True)

    def group(self, params: TaskParamsBase) -> Hashable:
        return ()

    def prepare(self, resident: Any, inputs: list[Any], params: TaskParamsBase) -> list[Any]:
        return list(inputs)

    def finish(self, resident: Any, raw: Any, params: TaskParamsBase) -> Any:
        return raw


def bad_input(index: int, message: str) -> InvalidInput:
    """A per-job input error found on the worker (the job fails; its batch-mates do not)."""
    return InvalidInput(f"inputs.{index}: {message}", field=f"inputs.{index}")


def label_of(model: Any, index: int) -> str:
    """The label name a classification head gives class ``index``."""
    id2label = getattr(model.config, "id2label", None) or {}
    return str(id2label.get(index, id2label.get(str(index), f"LABEL_{index}")))
