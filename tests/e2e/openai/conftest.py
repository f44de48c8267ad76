"""Fixtures of the OpenAI-compatibility tests: the official SDK on the session's API, the tiny chat model."""
from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import KEY_A, KEY_B, MODEL_ROOT
from tests.support.openai_sdk import chat_model, sync_client


@pytest.fixture(scope="session")
def model(models: dict[str, str]) -> str:
    """The catalog id of the tiny GPT-2 with a chat template (built under the session's model root)."""
    return chat_model(MODEL_ROOT)


@pytest.fixture()
def oai(api_url: str) -> Iterator[openai.OpenAI]:
    """``openai.OpenAI`` as tenant alpha, without the SDK's retries (errors reach the test as they are)."""
    with sync_client(api_url, KEY_A, max_retries=0) as client:
        yield client


@pytest.fixture()
def oai_b(api_url: str) -> Iterator[openai.OpenAI]:
    """``openai.OpenAI`` as tenant beta."""
    with sync_client(api_url, KEY_B, max_retries=0) as client:
        yield client
