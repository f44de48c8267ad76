"""The test Hub speaks enough of the Hub protocol for the real `huggingface_hub` client, end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import (
    CommitOperation,
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import sha

from tests.support.hf_client import point_hf_client_at
from tests.support.hub_server import HubServer

ALICE, BOB, READER = "tok-alice", "tok-bob", "tok-alice-read"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running test Hub, with this process's client aimed at it and a private HF_HOME."""
    with HubServer({ALICE: "alice", BOB: "bob", READER: "alice"}, read_only_tokens={READER}) as server:
        point_hf_client_at(monkeypatch, server, tmp_path / "hf_home")
        yield server


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A small model-like folder with a nested file and a binary one."""
    root = tmp_path / "upload"
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"hidden_size": 8}')
    (root / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 40)
    return root


def _api(hub: HubServer, token: str | None = ALICE) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=token if token is not None else False)


def _status(exc: pytest.ExceptionInfo[HfHubHTTPError]) -> int:
    response = exc.value.response
    assert response is not None
    return response.status_code


def test_whoami_names_the_token_owner(hub: HubServer) -> None:
    assert _api(hub).whoami()["name"] == "alice"
    assert _api(hub).whoami(token=BOB)["name"] == "bob"


def test_unknown_token_is_rejected_with_401_even_on_public_reads(hub: HubServer) -> None:
    hub.seed_repo("alice/public", {"a.txt": b"a"})
    with pytest.raises(HfHubHTTPError) as whoami_exc:
        _api(hub, "nope").whoami()
    with pytest.raises(HfHubHTTPError) as info_exc:
        _api(hub, "nope").model_info("alice/public")
    assert _status(whoami_exc) == _status(info_exc) == 401


def test_upload_folder_downloads_back_identical_by_branch_and_by_commit_sha(
    hub: HubServer, folder: Path, tmp_path: Path
) -> None:
    api = _api(hub)
    api.create_repo("alice/model", private=True)
    info = api.upload_folder(repo_id="alice/model", folder_path=folder, commit_message="first")
    assert info.oid == hub.head("alice/model") and len(info.oid) == 40
    for revision in ("main", info.oid):
        path = hf_hub_download(
            "alice/model",
            "sub/weights.bin",
            revision=revision,
            endpoint=hub.endpoint,
            token=ALICE,
            cache_dir=tmp_path / f"cache-{revision}",
        )
        assert Path(path).read_bytes() == (folder / "sub" / "weights.bin").read_bytes()
    assert hub.repo_files("alice/model")["config.json"] == b'{"hidden_size": 8}'


def test_an_old_commit_sha_still_resolves_to_the_files_of_that_commit(hub: HubServer, tmp_path: Path) -> None:
    api = _api(hub)
    api.create_repo("alice/versions")
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id="alice/versions")
    second = api.upload_file(path_or_fileobj=b"v2", path_in_repo="f.txt", repo_id="alice/versions")
    assert first.oid != second.oid
    old = hf_hub_download(
        "alice/versions", "f.txt", revision=first.oid, endpoint=hub.endpoint, cache_dir=tmp_path
    )
    new = hf_hub_download("alice/versions", "f.txt", endpoint=hub.endpoint, cache_dir=tmp_path)
    assert (Path(old).read_bytes(), Path(new).read_bytes()) == (b"v1", b"v2")
    assert hub.repo_files("alice/versions", revision=first.oid[:7])["f.txt"] == b"v1"
    assert [c.commit_id for c in api.list_repo_commits("alice/versions")][:2] == [second.oid, first.oid]


def test_snapshot_download_fetches_every_file_at_the_revision(
    hub: HubServer, folder: Path, tmp_path: Path
) -> None:
    api = _api(hub)
    api.create_repo("alice/snap", private=True)
    info = api.upload_folder(repo_id="alice/snap", folder_path=folder)
    api.upload_file(path_or_fileobj=b"later", path_in_repo="later.txt", repo_id="alice/snap")
    local = Path(
        snapshot_download(
            "alice/snap", revision=info.oid, endpoint=hub.endpoint, token=ALICE, local_dir=tmp_path / "snap"
        )
    )
    got = {
        p.relative_to(local).as_posix(): p.read_bytes()
        for p in local.rglob("*")
        if p.is_file() and ".cache" not in p.parts
    }
    assert got == hub.repo_files("alice/snap", revision=info.oid)
    assert "later.txt" not in got


def test_private_repo_is_invisible_to_another_user_and_to_anonymous(hub: HubServer, tmp_path: Path) -> None:
    hub.seed_repo("alice/secret", {"s.txt": b"s"}, private=True)
    for token, status in ((BOB, 404), (None, 401)):
        with pytest.raises(RepositoryNotFoundError) as info_exc:
            _api(hub, token).model_info("alice/secret")
        assert _status(info_exc) == status
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(
                "alice/secret", "s.txt", endpoint=hub.endpoint, token=token or False, cache_dir=tmp_path
            )
    assert _api(hub).model_info("alice/secret").private is True


def test_writes_need_the_owners_write_token(hub: HubServer) -> None:
    _api(hub).create_repo("alice/guarded")
    attempts = ((None, 401), ("nope", 401), (BOB, 403), (READER, 403))
    for token, status in attempts:
        with pytest.raises(HfHubHTTPError) as exc:
            _api(hub, token).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/guarded")
        assert _status(exc) == status, token
    with pytest.raises(HfHubHTTPError) as create_exc:
        _api(hub, None).create_repo("alice/anon")
    assert _status(create_exc) == 401
    assert set(hub.repo_files("alice/guarded")) == {".gitattributes"}


def test_seen_auth_headers_record_which_token_was_sent(hub: HubServer) -> None:
    hub.seed_repo("alice/pub", {"a.txt": b"a"})
    _api(hub, BOB).model_info("alice/pub")
    _api(hub, None).model_info("alice/pub")
    assert hub.seen_auth_headers == [f"Bearer {BOB}"]
    assert [r.headers.get("authorization") or r.headers.get("Authorization") for r in hub.requests_log] == [
        "<redacted>",
        None,
    ]


def test_dataset_repos_round_trip_separately_from_models(hub: HubServer, tmp_path: Path) -> None:
    api = _api(hub)
    api.create_repo("alice/data", repo_type="dataset", private=True)
    api.upload_file(
        path_or_fileobj=b"a,b\n1,2\n", path_in_repo="train.csv", repo_id="alice/data", repo_type="dataset"
    )
    path = hf_hub_download(
        "alice/data", "train.csv", repo_type="dataset", endpoint=hub.endpoint, token=ALICE, cache_dir=tmp_path
    )
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    info = api.dataset_info("alice/data")
    assert info.sha == hub.head("alice/data", "dataset")
    assert "train.csv" in {s.rfilename for s in info.siblings or []}
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/data")


def test_model_card_push_to_hub_through_the_default_endpoint(hub: HubServer, tmp_path: Path) -> None:
    _api(hub).create_repo("alice/carded")
    card = ModelCard("---\nlicense: apache-2.0\n---\n# Carded\n")
    card.push_to_hub("alice/carded", token=ALICE)
    assert hub.repo_files("alice/carded")["README.md"] == str(card).encode()
    path = hf_hub_download("alice/carded", "README.md", token=ALICE)  # no endpoint=: HF_ENDPOINT is patched
    assert Path(path).read_bytes() == str(card).encode()


def test_upload_folder_without_hf_xet_takes_the_create_commit_path(
    hub: HubServer, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    _api(hub).create_repo("alice/plain")
    _api(hub).upload_folder(repo_id="alice/plain", folder_path=folder)
    assert hub.repo_files("alice/plain")["sub/weights.bin"] == (folder / "sub" / "weights.bin").read_bytes()
    assert not [r for r in hub.requests_log if "lfs" in r.path or "xet" in r.path]


def test_create_commit_deletes_and_adds_and_checks_the_parent(hub: HubServer) -> None:
    api = _api(hub)
    api.create_repo("alice/ops")
    base = api.upload_file(path_or_fileobj=b"1", path_in_repo="d/one.txt", repo_id="alice/ops").oid
    operations: list[CommitOperation] = [CommitOperationDelete("d/"), CommitOperationAdd("two.txt", b"2")]
    api.create_commit("alice/ops", operations, commit_message="swap", parent_commit=base)
    assert set(hub.repo_files("alice/ops")) == {".gitattributes", "two.txt"}
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit(
            "alice/ops", [CommitOperationAdd("three.txt", b"3")], commit_message="stale", parent_commit=base
        )
    assert _status(exc) == 412


def test_reuploading_unchanged_files_makes_no_new_commit(hub: HubServer, folder: Path) -> None:
    api = _api(hub)
    api.create_repo("alice/same")
    first = api.upload_folder(repo_id="alice/same", folder_path=folder).oid
    again = api.upload_folder(repo_id="alice/same", folder_path=folder).oid
    assert again == first == hub.head("alice/same")


def test_tree_listing_and_blob_ids_match_git(hub: HubServer, folder: Path) -> None:
    api = _api(hub)
    api.create_repo("alice/tree")
    api.upload_folder(repo_id="alice/tree", folder_path=folder)
    top = {e.path for e in api.list_repo_tree("alice/tree")}
    assert top == {".gitattributes", "config.json", "sub"}
    files = {
        f.path: f.blob_id for f in api.list_repo_tree("alice/tree", recursive=True) if hasattr(f, "blob_id")
    }
    assert files["sub/weights.bin"] == sha.git_hash((folder / "sub" / "weights.bin").read_bytes())
    assert api.list_repo_files("alice/tree") == [".gitattributes", "config.json", "sub/weights.bin"]
    assert api.file_exists("alice/tree", "sub/weights.bin") and not api.file_exists("alice/tree", "nope")


def test_unknown_revision_is_revision_not_found(hub: HubServer, tmp_path: Path) -> None:
    hub.seed_repo("alice/revs", {"a.txt": b"a"})
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/revs", "a.txt", revision="nope", endpoint=hub.endpoint, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        _api(hub).model_info("alice/revs", revision="0" * 40)


def test_range_requests_return_partial_content(hub: HubServer) -> None:
    hub.seed_repo("alice/ranged", {"b.bin": b"0123456789"})
    response = httpx.get(f"{hub.endpoint}/alice/ranged/resolve/main/b.bin", headers={"Range": "bytes=2-4"})
    assert (response.status_code, response.content) == (206, b"234")
    assert response.headers["Content-Range"] == "bytes 2-4/10"
