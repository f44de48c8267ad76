"""A private stack for the generation tests (tests/e2e/test_continuous_*.py): one threads-pool worker with a
small KV-cache budget and its metrics server on, shared by the modules that use it."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpuq.common.embedded_redis import free_port
from tests.conftest import KEY_A, MODEL_ROOT
from tests.support.generation import KV_BUDGET, lora, wide_gpt2
from tests.support.models import tiny
from tests.support.stack import MiniStack, worker_env


@pytest.fixture(scope="session")
def gen_models() -> dict[str, str]:
    """The tiny chat GPT-2, two LoRA adapters on it, the plain tiny GPT-2 (no chat template), a wide GPT-2."""
    chat = Path(tiny(MODEL_ROOT, "gpt2-chat"))
    return {"chat": str(chat), "plain": tiny(MODEL_ROOT, "gpt2"),
            "lora-a": str(lora(chat, MODEL_ROOT / "gpt2-chat-lora-a", seed=1)),
            "lora-b": str(lora(chat, MODEL_ROOT / "gpt2-chat-lora-b", seed=2)),
            "wide": str(wide_gpt2(chat, MODEL_ROOT / "gpt2-wide"))}


@pytest.fixture(scope="session")
def gen_stack(log_dir: Path, gen_models: dict[str, str]) -> Iterator[MiniStack]:
    port = free_port()
    with MiniStack(worker_env(), log_dir, "generation") as s:
        s.worker("gen", concurrency=16, GPUQ_KV_CACHE_BUDGET=KV_BUDGET, GPUQ_TORCH_THREADS="1",
                 GPUQ_WORKER_METRICS_PORT=str(port), GPUQ_WORKER_METRICS_HOST="127.0.0.1")
        s.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
        yield s


@pytest.fixture()
def gclient(gen_stack: MiniStack) -> Iterator[httpx.Client]:
    with gen_stack.client(KEY_A) as c:
        yield c
