"""The official openai SDK pointed at a gpuq API, and the tiny models the OpenAI tests name."""
from __future__ import annotations

from pathlib import Path

import openai

from gpuq.worker.devmodels import ensure_built

CHAT_MODEL = "gpt2-chat"  # root-relative: the catalog's name for the tiny GPT-2 with a chat template


def sync_client(api_url: str, key: str, **options: object) -> openai.OpenAI:
    """``openai.OpenAI`` on the API's ``/v1``."""
    return openai.OpenAI(base_url=f"{api_url}/v1", api_key=key, **{"timeout": 120, **options})  # type: ignore[arg-type]


def async_client(api_url: str, key: str, **options: object) -> openai.AsyncOpenAI:
    """``openai.AsyncOpenAI`` on the API's ``/v1``."""
    return openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=key, **{"timeout": 120, **options})  # type: ignore[arg-type]


def chat_model(root: Path) -> str:
    """Build the tiny chat GPT-2 under the session's model root; its catalog id."""
    ensure_built(root, CHAT_MODEL)
    return CHAT_MODEL
