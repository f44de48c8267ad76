"""The one settings object for gpuq: every knob is a ``GPUQ_`` environment variable.

Fields are grouped by concept, one mixin class per concept (its docstring says what the group covers), and the
mixins combine into ``Settings``; ``get_settings()`` is the one way to get it. Environment names are the field
names with the ``GPUQ_`` prefix, whatever group a field sits in.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "dev", "devkey", "password", "admin"})


def _split(value: object, sep: str) -> object:
    """Split a delimited env string into a list; pass lists through untouched."""
    if isinstance(value, str):
        return _parts(value, sep)
    return value


def _parts(value: str, sep: str) -> list[str]:
    return [part.strip() for part in value.split(sep) if part.strip()]


def tenant_pairs(value: str, setting: str, what: str, strict: bool = True) -> list[tuple[str, str]]:
    """``tenant:value,tenant2:value2`` as (tenant, value) pairs: the one parser of per-tenant list settings.

    ``strict`` refuses an entry without a tenant, a colon or a value (naming ``GPUQ_<setting>`` and ``what``);
    otherwise such an entry gives an empty value.
    """
    pairs: list[tuple[str, str]] = []
    for item in _parts(value, ","):
        tenant, sep, rest = item.partition(":")
        if strict and (not sep or not tenant or not rest):
            raise ValueError(f"GPUQ_{setting.upper()} entries must look like tenant:{what}")
        pairs.append((tenant, rest))
    return pairs


class TenantQuota(BaseModel):
    """Limits for one tenant; 0 means unlimited, None falls back to the global default."""

    model_config = ConfigDict(extra="forbid")

    max_in_flight: int | None = Field(default=None, ge=0)
    submit_rate_per_s: float | None = Field(default=None, ge=0)
    submit_burst: int | None = Field(default=None, ge=0)


class BatchLimits(BaseModel):
    """Dynamic-batching limits for one model (``GPUQ_BATCH_OVERRIDES``)."""

    max_batch_size: int | None = Field(default=None, ge=1, le=4096)
    max_wait_ms: float | None = Field(default=None, ge=0, le=10_000)


class DeploymentSettings(BaseModel):
    """Where this deployment runs and keeps its state: environment, Redis, local folders, the sealing key."""

    env: Literal["dev", "test", "prod"] = "dev"
    redis_url: str | None = None
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: SecretStr | None = None
    key_prefix: str = "gpuq"
    artifact_dir: Path = Path("var/artifacts")
    data_dir: Path = Path("var")
    files_dir: Path | None = None  # uploaded data sets; None: a "files" directory next to artifact_dir
    secret_key: SecretStr | None = None


class TenantSettings(BaseModel):
    """Who may call the API, and how much each tenant may submit. ``tenant_quotas`` (JSON) overrides the global
    quotas per tenant: {"alpha": {"max_in_flight": 10, "submit_rate_per_s": 2, "submit_burst": 20}}."""

    api_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    admin_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    quota_max_in_flight: int = Field(default=0, ge=0)
    quota_submit_rate_per_s: float = Field(default=0.0, ge=0)
    quota_submit_burst: int = Field(default=0, ge=0)
    tenant_quotas: dict[str, TenantQuota] = Field(default_factory=dict)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        """``tenant:key,...`` -> {key: tenant}."""
        if not isinstance(value, str):
            return value
        return {key: tenant for tenant, key in tenant_pairs(value, "api_keys", "key")}

    def quota_for(self, tenant: str) -> TenantQuota:
        """The tenant's quota: its own entry in ``tenant_quotas`` over the global defaults."""
        base = TenantQuota(max_in_flight=self.quota_max_in_flight, submit_rate_per_s=self.quota_submit_rate_per_s,
                           submit_burst=self.quota_submit_burst)
        own = self.tenant_quotas.get(tenant)
        return base.model_copy(update=own.model_dump(exclude_none=True)) if own else base


class ApiSettings(BaseModel):
    """The HTTP API: where it listens, request bounds, and how submits reach the broker."""

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = Field(default=1, ge=1, le=256)  # API processes
    max_body_bytes: int = 2_000_000
    max_list_limit: int = 500
    max_upload_bytes: int = 100_000_000
    # Longest a request may wait for its job (``Prefer: wait=N``, ``?wait=N``, /generate); larger N are capped.
    sync_wait_max_s: float = Field(default=60.0, ge=0, le=3600)
    # Bulk submits (POST /v1/jobs/batch): jobs per request, and jobs per Celery message for kinds that run
    # groups together (inference); a group is acknowledged once all its jobs have their outcome.
    bulk_max_jobs: int = Field(default=1000, ge=1, le=100_000)
    group_max_jobs: int = Field(default=64, ge=1, le=4096)
    # Single submits of a grouping kind arriving together share a group message: how long the first waits
    # for company when other submits are in flight (0: a message per job).
    submit_coalesce_ms: float = Field(default=10.0, ge=0, le=1000)
    # Single submits in one round trip (the submit script stores the record and pushes its Celery message,
    # common/submit_script.py; false: Celery's publish in the thread pool).
    submit_one_trip: bool = True


class JobSettings(BaseModel):
    """A job's life: queues, time limits, leases and sweeps, how long records and results are kept."""

    queues: Annotated[list[str], NoDecode] = Field(default_factory=list)
    job_time_limit_s: int = 3600
    time_limit_grace_s: int = 30
    visibility_timeout_s: int = 7200
    lease_ttl_s: float = 30.0
    # A job failing with a retryable error goes back to its queue after ``retry_backoff_s`` x 2^(attempt-1),
    # capped at ``retry_backoff_max_s``, until its spec's max_attempts; then it is dead-lettered.
    retry_backoff_s: float = Field(default=1.0, ge=0)
    retry_backoff_max_s: float = Field(default=60.0, ge=0)
    sweep_interval_s: float = 10.0
    reaper_interval_s: float = Field(default=5.0, gt=0)
    record_ttl_s: int = 7 * 86400
    idempotency_ttl_s: int = 86400
    result_inline_max_bytes: int = 64_000
    max_inputs_per_job: int = 1024
    synthetic_jobs: bool = True
    task_events: bool = True  # Celery task events (Flower); each costs a Redis publish per job state
    task_event_progress_interval_s: float = 1.0


class WorkerSettings(BaseModel):
    """A worker process: its pool, device, heartbeats, shutdown window and metrics server."""

    # Celery pool of `gpuq worker`: prefork (one child, hard time limits by Celery; image / fine-tune workers)
    # or threads (many jobs in flight so the batcher can merge them; time limits enforced by gpuq's watchdog).
    worker_pool: Literal["prefork", "threads", "solo"] = "prefork"
    # Pool size; default 1, or 2 x batch_max_size for threads.
    worker_concurrency: int | None = Field(default=None, ge=1, le=1024)
    worker_soft_shutdown_s: int = 60
    worker_heartbeat_s: float = 5.0
    worker_ttl_s: float = 20.0
    worker_metrics_host: str = "0.0.0.0"
    worker_metrics_port: int = 9100
    # The Celery node name (``gpuq worker`` sets it for its pool children; unset: the host name), and this
    # worker run's boot id, set by the parent before it forks (a restarted worker must not pass for its
    # previous life). Read once, by worker/identity.py.
    worker_name: str | None = None
    worker_boot: str = ""
    device: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    torch_threads: int | None = Field(default=None, ge=1, le=256)


class ModelSettings(BaseModel):
    """Models and data sets: where they are found (local roots, the Hub), and how many stay resident."""

    model_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    dataset_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    hf_token: SecretStr | None = None
    # ``tenant:ns1|ns2,...``: the Hub namespaces a tenant may push to with the server's token.
    hub_namespaces: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)
    # The model catalog (GET /v1/models) lists this HF hub cache. Unset: HF_HUB_CACHE, else $HF_HOME/hub,
    # else ~/.cache/huggingface/hub (what huggingface_hub uses).
    hub_cache_dir: Path | None = None
    preload: Annotated[list[str], NoDecode] = Field(default_factory=list)
    model_cache_max_models: int = 16
    model_cache_budget: ByteSize | None = None  # "8GiB"; default: 80% of the GPU, or half the host RAM
    adapter_cache_max: int = 8  # PEFT adapters kept loaded per resident base model

    @field_validator("hub_namespaces", mode="before")
    @classmethod
    def _parse_namespaces(cls, value: object) -> object:
        """``tenant:ns1|ns2,tenant2:ns3`` -> {tenant: [ns1, ns2], ...}."""
        if not isinstance(value, str):
            return value
        pairs = tenant_pairs(value, "hub_namespaces", "ns1|ns2", strict=False)
        return {tenant: [ns for ns in spaces.split("|") if ns] for tenant, spaces in pairs}

    @property
    def hub_cache(self) -> Path:
        """The HF hub cache directory this process sees (GPUQ_HUB_CACHE_DIR, else huggingface_hub's own rule)."""
        if self.hub_cache_dir is not None:
            return self.hub_cache_dir
        if os.environ.get("HF_HUB_CACHE"):
            return Path(os.environ["HF_HUB_CACHE"])
        home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
        return Path(home) / "hub"


class BatchingSettings(BaseModel):
    """Dynamic batching of inference inputs, and affinity routing of jobs to workers holding their model."""

    batch_max_size: int = Field(default=32, ge=1, le=4096)  # inputs in one forward pass
    batch_max_wait_ms: float = Field(default=5.0, ge=0, le=10_000)  # how long a request waits for company
    # Forward passes run at once: 1 on a GPU; on a CPU worker, cores / GPUQ_TORCH_THREADS.
    batch_executors: int = Field(default=1, ge=1, le=64)
    # Per-model override, JSON: {"<model ref>": {"max_batch_size": 8, "max_wait_ms": 2}}.
    batch_overrides: dict[str, BatchLimits] = Field(default_factory=dict)
    affinity_routing: bool = True
    affinity_refresh_s: float = Field(default=0.5, gt=0, le=60)  # how stale the API's view of workers may be
    affinity_spill_depth: int = Field(default=64, ge=1)  # a holder this far behind: load the model elsewhere
    affinity_assign_ttl_s: int = Field(default=60, ge=1)


class GenerationSettings(BaseModel):
    """Text generation: token bounds, the continuous-batching engine (worker/generation/) and ``/generate``."""

    max_new_tokens_limit: int = 2048
    # Continuous batching over a KV cache, or static generate calls.
    generation_engine: Literal["continuous", "static"] = "continuous"
    # KV-cache bytes one resident causal LM may hold, counted in the model cache's budget; default: this
    # fraction of that budget.
    kv_cache_budget: ByteSize | None = None
    kv_cache_fraction: float = Field(default=0.25, gt=0, le=0.9)
    generation_max_sequences: int = Field(default=64, ge=1, le=4096)  # sequences sharing one decode step
    # Prompt tokens prefilled before the next decode step (at least one prompt): time to first token of
    # arrivals against inter-token latency of the running sequences.
    generation_prefill_tokens: int = Field(default=1024, ge=1)
    # ``GET/POST /generate``: the model it runs, its token budget and how long it waits.
    generate_model: str | None = None
    generate_max_new_tokens: int = Field(default=64, ge=1)
    generate_timeout_s: float = Field(default=60.0, gt=0)


class ImageSettings(BaseModel):
    """The ``image`` kind: request bounds the API enforces (422 naming the field) and the worker's guards."""

    image_max_width: int = 2048
    image_max_height: int = 2048
    image_max_steps: int = 150
    image_max_images: int = 8
    image_max_prompt_chars: int = 2000
    # model_cpu_offload trades speed for GPU memory; operators opt in per deployment.
    image_allow_cpu_offload: bool = False
    # LoRA adapters kept loaded per resident pipeline; the least recently used is deleted beyond this.
    image_adapter_cache_size: int = 4
    # Worker-side memory guard: the largest width*height*batch (doubled under classifier-free guidance) this
    # worker accepts. Larger jobs fail as resource_exhausted before touching the device. Unset: no guard.
    image_memory_budget_pixels: int | None = None


class DataJobSettings(BaseModel):
    """The kinds that read data sets (``finetune``, ``evaluate``, ``tokenizer``, ``batch_inference``)."""

    max_dataset_rows: int = 1_000_000
    finetune_checkpoint_keep: int = 2  # newest complete checkpoints kept per job while it trains
    batch_inference_max_rows: int = Field(default=1_000_000, ge=1)


class WebhookSettings(BaseModel):
    """Webhook deliveries: signing secrets per tenant, allowed targets, timeouts and retries."""

    # ``tenant:secret,...``: HMAC-SHA256 key signing each tenant's webhook deliveries; a tenant without one
    # cannot ask for webhooks.
    webhook_secrets: Annotated[dict[str, SecretStr], NoDecode] = Field(default_factory=dict)
    # Addresses (IPs, CIDRs) or host names a webhook may target although they are not public, e.g. 127.0.0.1.
    webhook_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_s: float = Field(default=1.0, gt=0)
    webhook_backoff_max_s: float = Field(default=600.0, gt=0)
    webhook_progress_interval_s: float = Field(default=5.0, ge=0)
    webhook_concurrency: int = Field(default=32, ge=1)

    @field_validator("webhook_secrets", mode="before")
    @classmethod
    def _parse_webhook_secrets(cls, value: object) -> object:
        """``tenant:secret,tenant2:secret2`` -> {tenant: secret}."""
        if not isinstance(value, str):
            return value
        return dict(tenant_pairs(value, "webhook_secrets", "secret"))


class OpenAISettings(BaseModel):
    """The OpenAI-compatible API (/v1/chat/completions, /v1/embeddings, ...): how long a call that answers with
    its job's result waits for it (then 504, and the SDK's retry waits on the same job), how long an SDK retry
    finds the job its first attempt made, max_tokens when a chat completion names none, and whether a call may
    name a Hub model the catalog does not list (pulled on first use; off: unlisted models are 404)."""

    openai_wait_s: float = Field(default=600.0, gt=0, le=3600)
    openai_retry_window_s: int = Field(default=900, ge=1)
    openai_max_tokens_default: int = Field(default=256, ge=1)
    openai_hub_models: bool = True


class ConsoleSettings(BaseModel):
    """The operator's consoles beside the API: Flower and the demo UI."""

    flower_port: int = 5555
    flower_basic_auth: SecretStr | None = None
    ui_port: int = 7860


class Settings(DeploymentSettings, TenantSettings, ApiSettings, JobSettings, WorkerSettings, ModelSettings,
               BatchingSettings, GenerationSettings, ImageSettings, DataJobSettings, WebhookSettings,
               OpenAISettings, ConsoleSettings, BaseSettings):
    """Process-wide configuration, read once from the environment (prefix ``GPUQ_``)."""

    model_config = SettingsConfigDict(env_prefix="GPUQ_", extra="ignore")

    @field_validator("admin_keys", "queues", "preload", "webhook_allowlist", mode="before")
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
        for tenant, secret in self.webhook_secrets.items():
            if secret.get_secret_value().lower() in PLACEHOLDER_SECRETS or len(secret.get_secret_value()) < 16:
                raise ValueError(f"GPUQ_WEBHOOK_SECRETS holds a placeholder or short secret for {tenant!r} in prod")
        for key in [*self.api_keys, *self.admin_keys]:
            if key.lower() in PLACEHOLDER_SECRETS or len(key) < 16:
                raise ValueError("GPUQ_API_KEYS/GPUQ_ADMIN_KEYS hold a placeholder or short key in prod")
        if self.flower_basic_auth is not None:
            password = self.flower_basic_auth.get_secret_value().partition(":")[2]
            if password.lower() in PLACEHOLDER_SECRETS:
                raise ValueError("GPUQ_FLOWER_BASIC_AUTH has a placeholder password in prod")
        return self

    @property
    def files_root(self) -> Path:
        """Where uploaded data files live: GPUQ_FILES_DIR, else a sibling of the artifact store."""
        return self.files_dir or self.artifact_dir.parent / "files"

    @property
    def resolved_redis_url(self) -> str:
        """The Redis URL to use; the launcher fills it in when an embedded Redis is started."""
        if not self.redis_url:
            raise RuntimeError("GPUQ_REDIS_URL is unset: start the stack with `gpuq up` for an embedded Redis")
        return self.redis_url


class ClientSettings(BaseSettings):
    """What the Python client reads from the environment; read at each client's construction (a client is cheap,
    and a process that only talks to gpuq must not be refused over the server's settings)."""

    model_config = SettingsConfigDict(env_prefix="GPUQ_", extra="ignore")

    api_url: str | None = None
    api_key: str | None = None


def client_settings() -> ClientSettings:
    """The client's settings as the environment says now (not cached)."""
    return ClientSettings()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the cached process-wide settings."""
    return Settings()
