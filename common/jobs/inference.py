"""The ``inference`` job kind: a params model per task (discriminated by ``task``), each checking its inputs.

Every task validates its inputs at submit time, so a bad request is a 422 naming the field and never reaches a
worker. The worker side lives in ``worker/inference/<task>.py``. A task is one ``@task_params`` class here
(its ``task`` literal: the name first, then aliases) and one registered task on the worker; the submit union,
the stored union (adapter resolved, token sealed) and the alias table are built from that one registry.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.adapterref import AdapterRef, StoredAdapterRef, check_adapter
from gpuq.common.jobs.chat import check_chat_template, check_conversations
from gpuq.common.jobs.inputs import check_image_uploads, check_images, check_qa, check_texts, check_token_ids
from gpuq.common.jobs.modelref import check_model_ref
from gpuq.common.jobs.registry import JobSpec, Submitter, Validated, register, stored_variant
from gpuq.common.refs import Revision
from gpuq.common.settings import Settings

DType = Literal["auto", "float32", "float16", "bfloat16"]
Label = Annotated[str, Field(min_length=1, max_length=200)]
LangCode = Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})?$")]
_TRANSLATION_TASK = re.compile(r"^translation_(?P<src>[A-Za-z0-9_-]+?)_to_(?P<tgt>[A-Za-z0-9_-]+)$")
T = TypeVar("T", bound="type[TaskParamsBase]")
TASK_MODELS: list[type[TaskParamsBase]] = []  # the task registry, in declaration order


def task_params(cls: T) -> T:
    """Register a task's params model: its ``task`` literal names the task (first value) and its aliases."""
    TASK_MODELS.append(cls)
    return cls


class TaskParamsBase(BaseModel):
    """Fields every inference task takes (``task``, the discriminator, is each subclass's own literal)."""

    if TYPE_CHECKING:  # for readers of the base type; pydantic sees each subclass's Literal field only
        task: str

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    revision: Revision | None = None
    dtype: DType = "auto"
    # How many of this job's inputs go to the model at a time (progress is reported after each chunk); the
    # worker's dynamic batcher may put chunks of several jobs into one forward pass.
    batch_size: int = Field(8, ge=1, le=256)
    adapter: AdapterRef | None = None  # a PEFT adapter applied on the resident base

    def check_inputs(self, inputs: Any, settings: Settings) -> Any:
        """Validate the job's inputs for this task; text tasks take a string or a list of strings."""
        return check_texts(inputs, settings)

    def check_limits(self, settings: Settings) -> None:
        """Deployment limits beyond the params' own bounds."""

    def check_model(self, model: str) -> None:
        """What the task needs of the model, where the API can tell (its resolved reference)."""


class GenerateParams(TaskParamsBase):
    """Generation settings shared by every generating task (passed to ``model.generate``)."""

    max_new_tokens: int = Field(32, ge=1)
    min_new_tokens: int | None = Field(None, ge=0)
    do_sample: bool = False
    num_beams: int = Field(1, ge=1, le=16)
    temperature: float | None = Field(None, gt=0, le=10)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, le=10_000)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    no_repeat_ngram_size: int | None = Field(None, ge=1, le=64)
    length_penalty: float | None = Field(None, ge=-10, le=10)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)

    def check_limits(self, settings: Settings) -> None:
        if self.max_new_tokens > settings.max_new_tokens_limit:
            raise InvalidInput(f"params.max_new_tokens: at most {settings.max_new_tokens_limit}",
                               field="params.max_new_tokens")
        if self.min_new_tokens is not None and self.min_new_tokens > self.max_new_tokens:
            raise InvalidInput("params.min_new_tokens: larger than max_new_tokens",
                               field="params.min_new_tokens")


@task_params
class TextClassificationParams(TaskParamsBase):
    task: Literal["text-classification", "sentiment-analysis"]
    top_k: int | None = Field(1, ge=1, le=1000)
    function_to_apply: Literal["default", "softmax", "sigmoid", "none"] = "default"


@task_params
class TokenClassificationParams(TaskParamsBase):
    task: Literal["token-classification", "ner"]
    aggregation_strategy: Literal["none", "simple", "first", "average", "max"] = "simple"
    ignore_labels: list[Label] = Field(default_factory=lambda: ["O"], max_length=100)


@task_params
class QuestionAnsweringParams(TaskParamsBase):
    task: Literal["question-answering"]
    top_k: int = Field(1, ge=1, le=20)
    max_answer_len: int = Field(30, ge=1, le=512)
    max_seq_len: int = Field(384, ge=32, le=4096)
    doc_stride: int = Field(128, ge=0, le=2048)
    handle_impossible_answer: bool = False

    def check_inputs(self, inputs: Any, settings: Settings) -> Any:
        """``{"question", "context"}`` or a list of them."""
        if self.doc_stride >= self.max_seq_len // 2:
            raise InvalidInput("params.doc_stride: must be under half of max_seq_len",
                               field="params.doc_stride")
        return check_qa(inputs, settings)


class ContinueParams(GenerateParams):
    """Generation settings of the causal-LM tasks (text-generation, chat)."""

    # Stop strings end a sequence where they start (never part of the text); one string or a list.
    stop: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=8)
    stream: bool = False  # append each new piece of text as an ``output`` event while generating
    n: int = Field(1, ge=1, le=16)  # sequences per input (seeded: the j-th draws with seed + j)
    logprobs: int | None = Field(None, ge=0, le=20)  # per token: its log-probability and this many alternatives

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def check_limits(self, settings: Settings) -> None:
        super().check_limits(settings)
        if self.stream and self.num_beams > 1:
            raise InvalidInput("params.stream: token streaming needs num_beams 1", field="params.stream")
        if self.num_beams > 1 and self.n > self.num_beams:
            raise InvalidInput("params.n: beam search returns at most num_beams sequences", field="params.n")
        if self.logprobs is not None and (self.num_beams > 1 or self.no_repeat_ngram_size):
            raise InvalidInput("params.logprobs: needs num_beams 1 and no no_repeat_ngram_size (the continuous "
                               "engine)", field="params.logprobs")


@task_params
class TextGenerationParams(ContinueParams):
    task: Literal["text-generation"]
    return_full_text: bool = False


@task_params
class SummarizationParams(GenerateParams):
    task: Literal["summarization"]


@task_params
class TranslationParams(GenerateParams):
    """``task: "translation"`` with ``src_lang``/``tgt_lang``, or ``task: "translation_en_to_de"``."""

    task: Literal["translation"]
    src_lang: LangCode | None = None
    tgt_lang: LangCode | None = None


@task_params
class Text2TextParams(GenerateParams):
    task: Literal["text2text-generation"]


@task_params
class ZeroShotParams(TaskParamsBase):
    task: Literal["zero-shot-classification"]
    candidate_labels: list[Label] = Field(min_length=1, max_length=64)
    multi_label: bool = False
    hypothesis_template: str = Field("This example is {}.", min_length=2, max_length=500)

    def check_limits(self, settings: Settings) -> None:
        if "{}" not in self.hypothesis_template:
            raise InvalidInput("params.hypothesis_template: must contain {} where the label goes",
                               field="params.hypothesis_template")
        if len(set(self.candidate_labels)) != len(self.candidate_labels):
            raise InvalidInput("params.candidate_labels: labels repeat", field="params.candidate_labels")


@task_params
class FillMaskParams(TaskParamsBase):
    task: Literal["fill-mask"]
    top_k: int = Field(5, ge=1, le=100)
    targets: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(None, max_length=100)


@task_params
class FeatureExtractionParams(TaskParamsBase):
    task: Literal["feature-extraction"]
    normalize: bool = False
    pooling: Literal["mean", "cls"] = "mean"
    token_ids: bool = False  # inputs are lists of the model's token ids rather than texts
    count_tokens: bool = False  # each result is {"embedding", "tokens"}: how many tokens the model read

    def check_inputs(self, inputs: Any, settings: Settings) -> Any:
        """Texts, or with ``token_ids`` a list of token id lists."""
        return check_token_ids(inputs, settings) if self.token_ids else check_texts(inputs, settings)


@task_params
class ImageClassificationParams(TaskParamsBase):
    """Images as base64 strings (or ``data:image/...;base64,`` URLs) or uploads: ``{"file_id": ...}``."""

    task: Literal["image-classification"]
    top_k: int | None = Field(5, ge=1, le=1000)
    max_image_bytes: ClassVar[int] = 20_000_000

    def check_inputs(self, inputs: Any, settings: Settings) -> Any:
        return check_images(inputs, settings, self.max_image_bytes)


@task_params
class ChatParams(ContinueParams):
    """``inputs``: a conversation (``[{role, content}, ...]``) or a list of them, rendered by the model's own
    chat template with the assistant's turn open."""

    task: Literal["chat"]

    def check_inputs(self, inputs: Any, settings: Settings) -> Any:
        return check_conversations(inputs, settings)

    def check_model(self, model: str) -> None:
        check_chat_template(model)


def _names(cls: type[TaskParamsBase]) -> tuple[str, ...]:
    return tuple(get_args(cls.model_fields["task"].annotation))


# A union built from the registry (typing.Union of a tuple: the ``|`` form needs the members spelled out).
TaskParams = Annotated[Union[tuple(TASK_MODELS)], Field(discriminator="task")]  # type: ignore[valid-type]  # noqa: UP007
# Every accepted ``task`` value (aliases included), for docs and the worker's registry test.
TASKS: tuple[str, ...] = tuple(t for cls in TASK_MODELS for t in _names(cls))
TASK_NAMES: tuple[str, ...] = tuple(_names(cls)[0] for cls in TASK_MODELS)  # what the worker registers
ALIASES: dict[str, str] = {alias: _names(cls)[0] for cls in TASK_MODELS for alias in _names(cls)[1:]}
# The record's form of each task's params: the adapter resolved (``check_adapter``), unknown keys ignored.
STORED_TASK_MODELS: tuple[type[TaskParamsBase], ...] = tuple(
    stored_variant(cls, f"Stored{cls.__name__}", adapter=(StoredAdapterRef | None, None))
    for cls in TASK_MODELS)
StoredTaskParams = Annotated[Union[STORED_TASK_MODELS], Field(discriminator="task")]  # type: ignore[valid-type]  # noqa: UP007


class InferenceParams(RootModel[TaskParams]):  # type: ignore[valid-type]
    """Inference params, discriminated by ``task`` (``translation_xx_to_yy`` names its languages)."""

    @model_validator(mode="before")
    @classmethod
    def _translation_pair(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("task"), str):
            return data
        match = _TRANSLATION_TASK.match(data["task"])
        if match is None:
            return data
        out = {**data, "task": "translation"}
        for side in ("src", "tgt"):
            given = data.get(f"{side}_lang")
            if given is not None and given != match[side]:
                raise InvalidInput(f"params.{side}_lang: {given!r} contradicts task {data['task']!r}",
                                   field=f"params.{side}_lang")
            out[f"{side}_lang"] = match[side]
        return out


class StoredInferenceParams(RootModel[StoredTaskParams]):
    """A record's inference params: the stored form of one task's params (``translation`` already split)."""


def check(model: str, inputs: Any, parsed: Any, who: Submitter) -> Validated:
    """Validate an inference request beyond its params' types: limits, model reference, inputs."""
    params, settings = parsed.root, who.settings
    params.check_limits(settings)
    ref = check_model_ref(model, settings)
    params.check_model(ref)
    checked = params.check_inputs(inputs, settings)
    if isinstance(params, ImageClassificationParams):
        check_image_uploads(checked, who, params.max_image_bytes)
    stored = params.model_dump(exclude_none=True, exclude={"adapter"})
    if params.adapter is not None:
        stored["adapter"] = check_adapter(params.adapter, who)
    return Validated(model=ref, inputs=checked, params=stored)


SPEC = register(JobSpec(
    kind="inference",
    queue="inference",
    params_model=InferenceParams,
    check=check,
    stored_model=StoredInferenceParams,
    time_limit_s=600,
    affinity=True,
    groups=True,
    description="Run a transformers task (classification, NER, QA, generation, embeddings, ...) on a "
                "resident model, batched with concurrent jobs.",
))
