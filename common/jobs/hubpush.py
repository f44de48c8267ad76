"""The ``push_to_hub`` parameter shared by job kinds that publish results to the Hugging Face Hub."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.registry import Submitter, stored_variant
from gpuq.common.secrets import seal

REPO_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"


class PushToHub(BaseModel):
    """Where to publish: a repo id, visibility, and optionally the caller's own token."""

    model_config = ConfigDict(extra="forbid")

    repo_id: str = Field(pattern=REPO_ID)
    private: bool = True
    repo_type: Literal["model", "dataset"] = "model"
    token: SecretStr | None = None
    commit_message: str | None = Field(None, max_length=500)


# What ``prepare_push`` stores: the caller's token sealed, never clear.
StoredPushToHub = stored_variant(PushToHub, "StoredPushToHub", sealed_token=(str | None, None))


def prepare_push(push: PushToHub | None, who: Submitter, field: str = "params.push_to_hub") -> dict[str, Any] | None:
    """Check the namespace policy and seal the token: the stored form never holds a clear token.

    With the caller's own token the Hub decides what it may write. With the server's token a tenant may
    write only into the namespaces configured for it, refused here, before any upload starts.
    """
    if push is None:
        return None
    out: dict[str, Any] = push.model_dump(exclude={"token"}, exclude_none=True)
    if push.token is not None:
        out["sealed_token"] = seal(push.token.get_secret_value())
        return out
    namespace = push.repo_id.split("/")[0]
    allowed = who.settings.hub_namespaces.get(who.tenant, [])
    if namespace not in allowed:
        raise InvalidInput(f"{field}.repo_id: tenant may not push to namespace {namespace!r} with the server's "
                           f"token (allowed: {allowed}); pass push_to_hub.token to use your own",
                           field=f"{field}.repo_id")
    return out
