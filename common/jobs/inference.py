"""The ``inference`` job kind: transformers pipelines on a resident model."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from common.errors import InvalidInput
from common.jobs.adapterref import AdapterRef, check_adapter
from common.jobs.modelref import check_model_ref
from common.jobs.registry import JobSpec, Submitter, Validated, register
from common.settings import Settings

Revision = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")]
DType = Literal["auto", "float32", "float16", "bfloat16"]
MAX_TEXT_CHARS = 100_000


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    revision: Revision | None = None
    dtype: DType = "auto"
    batch_size: int = Field(8, ge=1, le=256)
    adapter: AdapterRef | None = None  # a PEFT adapter applied on the resident base (issue 7)


class TextClassificationParams(_Common):
    task: Literal["text-classification", "sentiment-analysis"]
    top_k: int | None = Field(1, ge=1, le=1000)


class TextGenerationParams(_Common):
    task: Literal["text-generation"]
    max_new_tokens: int = Field(32, ge=1)
    do_sample: bool = False
    num_beams: int = Field(1, ge=1, le=16)
    temperature: float | None = Field(None, gt=0, le=10)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, le=10_000)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    return_full_text: bool = False
    # Emit the text as it is generated, as ``output`` events ({"text": chunk}); single input, no beams.
    stream: bool = False


class FeatureExtractionParams(_Common):
    task: Literal["feature-extraction"]
    normalize: bool = False
    pooling: Literal["mean", "cls"] = "mean"


TaskParams = Annotated[
    TextClassificationParams | TextGenerationParams | FeatureExtractionParams,
    Field(discriminator="task"),
]


class InferenceParams(RootModel[TaskParams]):
    """Inference params, discriminated by ``task``."""


def _check_texts(inputs: Any, settings: Settings) -> list[str] | str:
    if isinstance(inputs, str):
        texts = [inputs]
    elif isinstance(inputs, list) and inputs and all(isinstance(t, str) for t in inputs):
        texts = inputs
    else:
        raise InvalidInput("inputs: expected a non-empty string or a non-empty list of strings", field="inputs")
    if len(texts) > settings.max_inputs_per_job:
        raise InvalidInput(f"inputs: at most {settings.max_inputs_per_job} items per job", field="inputs")
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidInput(f"inputs[{i}]: empty text", field=f"inputs.{i}")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidInput(f"inputs[{i}]: longer than {MAX_TEXT_CHARS} characters", field=f"inputs.{i}")
    return inputs  # type: ignore[no-any-return]


def _check_streamable(params: TextGenerationParams, texts: list[str] | str) -> None:
    if params.num_beams > 1:
        raise InvalidInput("params.stream: streaming works with num_beams=1 only", field="params.stream")
    if isinstance(texts, list) and len(texts) > 1:
        raise InvalidInput("params.stream: streaming needs a single input", field="params.stream")


def check(model: str, inputs: Any, parsed: Any, who: Submitter) -> Validated:
    """Validate an inference request beyond its params' types."""
    params, settings = parsed.root, who.settings
    if isinstance(params, TextGenerationParams) and params.max_new_tokens > settings.max_new_tokens_limit:
        raise InvalidInput(f"params.max_new_tokens: at most {settings.max_new_tokens_limit}",
                           field="params.max_new_tokens")
    ref = check_model_ref(model, settings.model_roots)
    texts = _check_texts(inputs, settings)
    if isinstance(params, TextGenerationParams) and params.stream:
        _check_streamable(params, texts)
    stored = params.model_dump(exclude_none=True, exclude={"adapter"})
    if params.adapter is not None:
        stored["adapter"] = check_adapter(params.adapter, who)
    return Validated(model=ref, inputs=texts, params=stored)


SPEC = register(JobSpec(
    kind="inference",
    queue="inference",
    params_model=InferenceParams,
    check=check,
    description="Run a transformers pipeline task on a resident model.",
))
