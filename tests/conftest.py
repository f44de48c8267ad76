"""Session fixtures: a real Redis server, real worker processes, the real API over HTTP, tiny real models."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Service, start_api, start_worker, wait_for, worker_alive

KEY_A, KEY_B = "key-alpha-0123456789", "key-beta-0123456789"
WEBHOOK_SECRET_A = "whsec-alpha-0123456789abcdef"
KEY_ADMIN = "key-admin-0123456789"
SESSION_DIR = Path(tempfile.mkdtemp(prefix="gpuq-tests-"))
MODEL_ROOT = SESSION_DIR / "models"
ARTIFACTS = Path(__file__).parent / "artifacts"

# The test process reads the same settings as the services it starts.
os.environ.update({
    "GPUQ_ENV": "test",
    "GPUQ_API_KEYS": f"alpha:{KEY_A},beta:{KEY_B}",
    "GPUQ_ARTIFACT_DIR": str(SESSION_DIR / "artifacts"),
    "GPUQ_DATA_DIR": str(SESSION_DIR),
    "GPUQ_MAX_BODY_BYTES": "200000",
    "GPUQ_MAX_UPLOAD_BYTES": "1000000",
    "HF_HUB_OFFLINE": "1",
    "HF_HOME": str(SESSION_DIR / "hf"),
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    # Issue 8: loopback receivers are allowlisted explicitly (the default refuses them); beta has no
    # webhook secret, so it cannot ask for webhooks; /generate runs the tiny GPT-2 the `models` fixture builds.
    "GPUQ_WEBHOOK_ALLOWLIST": "127.0.0.1",
    "GPUQ_WEBHOOK_SECRETS": f"alpha:{WEBHOOK_SECRET_A}",
    "GPUQ_GENERATE_MODEL": str(MODEL_ROOT / "gpt2"),
    "GRADIO_ANALYTICS_ENABLED": "False",
    "GPUQ_ADMIN_KEYS": KEY_ADMIN,
    # Workers serve metrics only where a test asks (with its own port): 9100 is shared by every checkout here.
    "GPUQ_WORKER_METRICS_PORT": "0",
})


def _model_roots() -> str:
    from gpuq.worker.devmodels import packaged_minilm_path

    return os.pathsep.join([str(MODEL_ROOT), str(packaged_minilm_path())])


os.environ["GPUQ_MODEL_ROOTS"] = _model_roots()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server for the whole session."""
    from gpuq.common.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(SESSION_DIR / "redis").start()
    os.environ["GPUQ_REDIS_URL"] = server.url
    from gpuq.common.settings import get_settings

    get_settings.cache_clear()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def models() -> dict[str, str]:
    """Tiny real models built from configs, plus the packaged all-MiniLM-L6-v2."""
    from gpuq.worker.devmodels import build_tiny_bert_classifier, build_tiny_gpt2, packaged_minilm_path

    return {"gpt2": str(build_tiny_gpt2(MODEL_ROOT / "gpt2")),
            "sentiment": str(build_tiny_bert_classifier(MODEL_ROOT / "bert-sentiment")),
            "minilm": str(packaged_minilm_path())}


@pytest.fixture(scope="session")
def service_env(redis_url: str) -> dict[str, str]:
    """Environment for every service subprocess."""
    return dict(os.environ)


@pytest.fixture(scope="session")
def log_dir() -> Path:
    path = SESSION_DIR / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def worker(service_env: dict[str, str], log_dir: Path, redis_url: str, models: dict[str, str]) -> Iterator[Service]:
    """One real gpuq worker process for the session."""
    svc = start_worker(service_env, log_dir, "main")
    wait_for(lambda: worker_alive(redis_url, "main@"), 90, "worker heartbeat")
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def api_url(service_env: dict[str, str], log_dir: Path, worker: Service) -> Iterator[str]:
    """The real API (uvicorn) over HTTP."""
    svc, url = start_api(service_env, log_dir)
    yield url
    svc.stop()


@pytest.fixture()
def client(api_url: str) -> Iterator[httpx.Client]:
    """HTTP client authenticated as tenant ``alpha``."""
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60) as c:
        yield c


@pytest.fixture()
def client_b(api_url: str) -> Iterator[httpx.Client]:
    """HTTP client authenticated as tenant ``beta``."""
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {KEY_B}"}, timeout=60) as c:
        yield c


@pytest.fixture()
def anon(api_url: str) -> Iterator[httpx.Client]:
    """HTTP client without credentials."""
    with httpx.Client(base_url=api_url, timeout=60) as c:
        yield c


@pytest.fixture()
def admin(api_url: str) -> Iterator[httpx.Client]:
    """HTTP client with an admin key (GPUQ_ADMIN_KEYS)."""
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {KEY_ADMIN}"}, timeout=60) as c:
        yield c
