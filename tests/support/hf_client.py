"""Aim the in-process `huggingface_hub` client at a test Hub, with its own HF_HOME and no ambient token."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.hub_server import HubServer

_ENV_DROPPED = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)


def point_hf_client_at(monkeypatch: pytest.MonkeyPatch, hub: HubServer, hf_home: Path) -> dict[str, str]:
    """Aim this process's `huggingface_hub` at `hub`, with its own HF_HOME and no ambient token.

    `huggingface_hub` reads HF_ENDPOINT / HF_HOME once, at import, so setting the environment is not enough in
    process: the module constants and the module-level `HfApi` (behind `upload_file`, `ModelCard.push_to_hub`)
    are patched too. Returns `hub.client_env(hf_home)` for subprocesses.
    """
    from huggingface_hub import constants, hf_api

    env = hub.client_env(hf_home)
    for name in _ENV_DROPPED:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    token_path = hf_home / "token"
    patched: dict[str, object] = {
        "ENDPOINT": hub.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": env["HF_HUB_CACHE"],
        "HF_XET_CACHE": env["HF_XET_CACHE"],
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_TOKEN_PATH": str(token_path),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
    }
    for name, constant in patched.items():
        monkeypatch.setattr(constants, name, constant)
    monkeypatch.setattr(hf_api.api, "endpoint", hub.endpoint)
    return env
