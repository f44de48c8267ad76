"""References to PEFT adapters applied on a resident base model: a finished fine-tune job, a Hub repo, a local dir."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.registry import Submitter, stored_variant
from gpuq.common.refs import HubId, Revision, is_hub_id, resolve_local_dir, resolve_model
from gpuq.common.secrets import seal

ADAPTER_CONFIG = "adapter/adapter_config.json"  # where a fine-tune job stores its adapter among its artifacts


class AdapterRef(BaseModel):
    """One of ``job`` (fine-tune job id of the same tenant), ``repo`` (+``revision``) or ``path``.

    ``path`` is a directory under the model roots (absolute, or relative to a root). ``repo`` resolves like
    a ``model``: a directory of that name under the roots first, else the Hub. A plain string is ``repo``
    when it is Hub-shaped, else ``path``.
    """

    model_config = ConfigDict(extra="forbid")

    job: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    repo: HubId | None = None
    revision: Revision | None = None
    path: str | None = Field(None, max_length=1024)
    token: SecretStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"repo": value} if is_hub_id(value) else {"path": value}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> AdapterRef:
        if sum(x is not None for x in (self.job, self.repo, self.path)) != 1:
            raise ValueError("give exactly one of job, repo or path")
        if self.revision is not None and self.repo is None:
            raise ValueError("revision applies to repo only")
        return self


# What ``check_adapter`` stores: a job id, a resolved path, or a Hub repo with its token sealed.
StoredAdapterRef = stored_variant(AdapterRef, "StoredAdapterRef", sealed_token=(str | None, None))


def check_adapter(ref: AdapterRef | None, who: Submitter, field: str = "params.adapter") -> dict[str, Any] | None:
    """Validate an adapter reference at submit; the stored form holds a sealed token, never a clear one."""
    if ref is None:
        return None
    if ref.job is not None:
        _check_job(ref.job, who, field)
        return {"job": ref.job}
    if ref.path is not None:
        return {"path": str(resolve_local_dir(ref.path, who.settings, f"{field}.path"))}
    assert ref.repo is not None
    found = resolve_model(ref.repo, who.settings, f"{field}.repo")
    if found.is_local:
        return {"path": found.value}
    out: dict[str, Any] = {"repo": ref.repo}
    if ref.revision:
        out["revision"] = ref.revision
    if ref.token is not None:
        out["sealed_token"] = seal(ref.token.get_secret_value())
    return out


def _check_job(job_id: str, who: Submitter, field: str) -> None:
    """The job must be this tenant's succeeded fine-tune with an adapter among its artifacts."""
    from gpuq.common.records import JobStore
    from gpuq.common.redis_client import get_redis
    from gpuq.common.storage import get_store

    raw = JobStore(get_redis()).get_raw(job_id)
    if raw is None or raw.get("tenant") != who.tenant or raw.get("kind") != "finetune":
        raise InvalidInput(f"{field}.job: no fine-tune job {job_id}", field=f"{field}.job")
    if raw.get("status") != "succeeded":
        raise InvalidInput(f"{field}.job: fine-tune job {job_id} is {raw.get('status')}, not succeeded",
                           field=f"{field}.job")
    try:
        get_store(who.settings.artifact_dir).local_path(who.tenant, job_id, ADAPTER_CONFIG)
    except Exception:  # noqa: BLE001 - NotFound: the job produced no adapter
        raise InvalidInput(f"{field}.job: job {job_id} has no adapter artifact", field=f"{field}.job") from None
