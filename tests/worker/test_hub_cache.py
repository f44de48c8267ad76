"""A private repo pulled with one tenant's token is cached where only that token finds it again.

Offline (HF_HUB_OFFLINE=1) the HF cache answers without asking the Hub who may read a repo, so a snapshot a
job's own token downloaded into the shared cache would be served to any other tenant naming the same id.
Real `huggingface_hub` client against the loopback test Hub.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from gpuq.common.errors import JobError
from gpuq.worker import hub
from tests.support.hf_client import point_hf_client_at
from tests.support.hub_server import HubServer

REPO = "alice/secret-model"


@pytest.fixture()
def test_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> HubServer:
    with HubServer(tokens={"tok-alice": "alice", "tok-bob": "bob"}) as server:
        point_hf_client_at(monkeypatch, server, tmp_path / "hf")
        server.seed_repo(REPO, {"config.json": b'{"model_type": "gpt2"}'}, private=True)
        yield server


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_a_pull_with_a_jobs_own_token_is_not_in_the_shared_cache(test_hub: HubServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pulled = hub.pull(REPO, None, "model", "tok-alice")
    assert (pulled.path / "config.json").read_bytes() == b'{"model_type": "gpt2"}'
    from huggingface_hub import constants

    assert "gpuq-credentials" in pulled.path.parts
    assert not (Path(constants.HF_HUB_CACHE) / "models--alice--secret-model").exists()
    go_offline(monkeypatch)
    with pytest.raises(JobError, match="not in the HF cache"):
        hub.pull(REPO, None, "model", None)  # another tenant, server credentials: nothing cached for it
    with pytest.raises(JobError, match="not in the HF cache"):
        hub.pull(REPO, None, "model", "tok-bob")  # another tenant's own token
    again = hub.pull(REPO, None, "model", "tok-alice")  # the same credential finds its snapshot offline
    assert again.path == pulled.path and again.sha == pulled.sha


def test_public_pulls_share_one_cache(test_hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    test_hub.seed_repo("org/public", {"config.json": b"{}"})
    pulled = hub.pull("org/public", None, "model", None)
    assert "gpuq-credentials" not in pulled.path.parts
    go_offline(monkeypatch)
    assert hub.pull("org/public", None, "model", None).path == pulled.path
