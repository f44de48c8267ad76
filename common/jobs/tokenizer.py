"""The ``tokenizer`` job kind: train a BPE, WordPiece or Unigram tokenizer (``tokenizers``) on a data column.

The artifact ``tokenizer.json`` loads with ``Tokenizer.from_file`` and ``PreTrainedTokenizerFast``; the
directory ``tokenizer/`` loads with ``AutoTokenizer.from_pretrained``. ``model`` is a free name for the result.
"""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.datasource import DataSource, SealedHubToken, check_data, seal_hub_token
from gpuq.common.jobs.registry import JobSpec, Submitter, Validated, register, stored_variant

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


class TokenizerParams(BaseModel):
    """Params of a tokenizer-training job."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    algorithm: Literal["bpe", "wordpiece", "unigram"]
    vocab_size: int = Field(8000, ge=32, le=1_000_000)
    min_frequency: int = Field(2, ge=1, le=1_000_000)
    special_tokens: list[str] | None = Field(None, max_length=1000)
    lowercase: bool = False
    data: DataSource
    sample: str | None = Field(None, min_length=1, max_length=10_000)
    hub_token: SecretStr | None = None


# The record's form: the Hub token sealed (``hub_token`` is never stored).
StoredTokenizerParams = stored_variant(TokenizerParams, "StoredTokenizerParams", SealedHubToken)


def check(model: str, inputs: Any, parsed: Any, who: Submitter) -> Validated:
    """``model`` names the tokenizer; the data must exist for this tenant."""
    params: TokenizerParams = parsed
    if not _NAME.match(model):
        raise InvalidInput("model: name the tokenizer with letters, digits and ._/-", field="model")
    if params.special_tokens is not None and any(not t or len(t) > 64 for t in params.special_tokens):
        raise InvalidInput("params.special_tokens: tokens must be 1 to 64 characters", field="params.special_tokens")
    stored = params.model_dump(exclude_none=True, exclude={"data", "hub_token"})
    stored["data"] = check_data(params.data, who, [["text"]])
    return Validated(model=model, inputs=None, params=seal_hub_token(stored, params.hub_token))


SPEC = register(JobSpec(
    kind="tokenizer",
    queue="finetune",
    params_model=TokenizerParams,
    check=check,
    stored_model=StoredTokenizerParams,
    time_limit_s=3600,
    description="Train a BPE / WordPiece / Unigram tokenizer on a data set column.",
))
