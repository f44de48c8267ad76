"""The one settings object for gpuq: every knob is a ``GPUQ_`` environment variable."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ByteSize, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "dev", "devkey", "password", "admin"})


def _split(value: object, sep: str) -> object:
    """Split a delimited env string into a list; pass lists through untouched."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(sep) if part.strip()]
    return value


class BatchLimits(BaseModel):
    """Dynamic-batching limits for one model (``GPUQ_BATCH_OVERRIDES``)."""

    max_batch_size: int | None = Field(default=None, ge=1, le=4096)
    max_wait_ms: float | None = Field(default=None, ge=0, le=10_000)


class Settings(BaseSettings):
    """Process-wide configuration, read once from the environment (prefix ``GPUQ_``)."""

    model_config = SettingsConfigDict(env_prefix="GPUQ_", extra="ignore")

    env: Literal["dev", "test", "prod"] = "dev"
    redis_url: str | None = None
    redis_sentinel_master: str = "mymaster"
    key_prefix: str = "gpuq"
    api_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    admin_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    model_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    artifact_dir: Path = Path("var/artifacts")
    data_dir: Path = Path("var")
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    flower_port: int = 5555
    flower_basic_auth: SecretStr | None = None
    max_body_bytes: int = 2_000_000
    max_list_limit: int = 500
    queues: Annotated[list[str], NoDecode] = Field(default_factory=list)
    job_time_limit_s: int = 3600
    visibility_timeout_s: int = 7200
    worker_soft_shutdown_s: int = 60
    worker_heartbeat_s: float = 5.0
    worker_ttl_s: float = 20.0
    worker_metrics_port: int = 9100
    record_ttl_s: int = 7 * 86400
    idempotency_ttl_s: int = 86400
    result_inline_max_bytes: int = 64_000
    model_cache_max_models: int = 16
    device: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    preload: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_new_tokens_limit: int = 2048
    max_inputs_per_job: int = 1024
    synthetic_jobs: bool = True
    secret_key: SecretStr | None = None
    hf_token: SecretStr | None = None
    hub_namespaces: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)

    # --- issue 6: inference breadth and speed (pool, dynamic batching, memory budget, affinity routing) ---
    # Celery pool of `gpuq worker`: prefork (one child, hard time limits by Celery; image / fine-tune workers)
    # or threads (many jobs in flight so the batcher can merge them; time limits enforced by gpuq's watchdog).
    worker_pool: Literal["prefork", "threads", "solo"] = "prefork"
    # Pool size; default 1, or 2 x batch_max_size for threads.
    worker_concurrency: int | None = Field(default=None, ge=1, le=1024)
    batch_max_size: int = Field(default=32, ge=1, le=4096)  # inputs in one forward pass
    batch_max_wait_ms: float = Field(default=5.0, ge=0, le=10_000)  # how long a request waits for company
    # Per-model override, JSON: {"<model ref>": {"max_batch_size": 8, "max_wait_ms": 2}}.
    batch_overrides: dict[str, BatchLimits] = Field(default_factory=dict)
    model_cache_budget: ByteSize | None = None  # "8GiB"; default: 80% of the GPU, or half the host RAM
    torch_threads: int | None = Field(default=None, ge=1, le=256)
    affinity_routing: bool = True
    affinity_refresh_s: float = Field(default=0.5, gt=0, le=60)  # how stale the API's view of workers may be
    affinity_spill_depth: int = Field(default=64, ge=1)  # a holder this far behind: load the model elsewhere
    affinity_assign_ttl_s: int = Field(default=60, ge=1)
    reaper_interval_s: float = Field(default=5.0, gt=0)
    dataset_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    batch_inference_max_rows: int = Field(default=1_000_000, ge=1)
    task_events: bool = True  # Celery task events (Flower); each costs a Redis publish per job state
    max_wait_s: float = Field(default=60.0, ge=0, le=600)  # longest ``Prefer: wait=N`` the API honours

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in _split(value, ","):  # type: ignore[union-attr]
            tenant, sep, key = item.partition(":")
            if not sep or not tenant or not key:
                raise ValueError("GPUQ_API_KEYS entries must look like tenant:key")
            pairs[key] = tenant
        return pairs

    @field_validator("hub_namespaces", mode="before")
    @classmethod
    def _parse_namespaces(cls, value: object) -> object:
        """``tenant:ns1|ns2,tenant2:ns3`` -> {tenant: [ns1, ns2], ...}."""
        if not isinstance(value, str):
            return value
        out: dict[str, list[str]] = {}
        for item in _split(value, ","):  # type: ignore[union-attr]
            tenant, _, spaces = item.partition(":")
            out[tenant] = [ns for ns in spaces.split("|") if ns]
        return out

    @field_validator("admin_keys", "queues", "preload", mode="before")
    @classmethod
    def _parse_csv(cls, value: object) -> object:
        return _split(value, ",")

    @field_validator("model_roots", "dataset_roots", mode="before")
    @classmethod
    def _parse_roots(cls, value: object) -> object:
        return _split(value, os.pathsep)

    @model_validator(mode="after")
    def _refuse_placeholders_outside_dev(self) -> Settings:
        if self.env != "prod":
            return self
        if "synthetic_jobs" not in self.model_fields_set:
            self.synthetic_jobs = False
        for key in [*self.api_keys, *self.admin_keys]:
            if key.lower() in PLACEHOLDER_SECRETS or len(key) < 16:
                raise ValueError("GPUQ_API_KEYS/GPUQ_ADMIN_KEYS hold a placeholder or short key in prod")
        if self.flower_basic_auth is not None:
            password = self.flower_basic_auth.get_secret_value().partition(":")[2]
            if password.lower() in PLACEHOLDER_SECRETS:
                raise ValueError("GPUQ_FLOWER_BASIC_AUTH has a placeholder password in prod")
        return self

    @property
    def resolved_redis_url(self) -> str:
        """The Redis URL to use; the launcher fills it in when an embedded Redis is started."""
        if not self.redis_url:
            raise RuntimeError("GPUQ_REDIS_URL is unset: start the stack with `gpuq up` for an embedded Redis")
        return self.redis_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the cached process-wide settings."""
    return Settings()
