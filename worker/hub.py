"""Hugging Face Hub integration for workers: pin revisions, push folders with retries and clear errors."""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gpuq.common.errors import JobError, TransientJobError
from gpuq.common.secrets import unseal
from gpuq.common.settings import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIES = 4


class HubAuthError(JobError):
    """The Hub refused the credentials or the namespace."""

    type_name = "hub_auth_error"


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    repo_type: str
    commit_sha: str
    commit_url: str

    def as_dict(self) -> dict[str, str]:
        return {"repo_id": self.repo_id, "repo_type": self.repo_type, "commit_sha": self.commit_sha,
                "commit_url": self.commit_url}


def token_for(push: dict[str, Any] | None) -> str | None:
    """The token to use: the job's own (unsealed here, in memory only) or the server's."""
    if push and push.get("sealed_token"):
        return unseal(str(push["sealed_token"]))
    server = get_settings().hf_token
    return server.get_secret_value() if server is not None else None


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def with_retries(call: Callable[[], T], what: str) -> T:
    """Run a Hub call, retrying transient failures (5xx, 429, connection errors) with backoff."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(RETRIES):
        try:
            return call()
        except (HfHubHTTPError, httpx.TransportError, ConnectionError, TimeoutError) as exc:
            status = _status(exc)
            if status in (401, 403):
                raise HubAuthError(f"{what}: the Hub refused the credentials ({status})") from None
            transient = status is None or status == 429 or status >= 500
            if not transient or attempt == RETRIES - 1:
                error = TransientJobError if transient else JobError
                raise error(f"{what}: {type(exc).__name__}: {str(exc)[:300]}") from None
            delay = 0.5 * 2 ** attempt
            log.warning("%s failed (%s); retrying in %.1fs", what, status or type(exc).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def push_folder(push: dict[str, Any], folder: Path, message: str) -> PushResult:
    """Create the repo if needed and upload ``folder`` as one commit."""
    from huggingface_hub import HfApi

    api = HfApi(token=token_for(push))
    repo_id, repo_type = str(push["repo_id"]), str(push.get("repo_type", "model"))
    with_retries(lambda: api.create_repo(repo_id, repo_type=repo_type, private=bool(push.get("private", True)),
                                         exist_ok=True), f"create_repo {repo_id}")
    info = with_retries(lambda: api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                                                  commit_message=push.get("commit_message") or message),
                        f"upload to {repo_id}")
    return PushResult(repo_id, repo_type, str(info.oid), str(info.commit_url))  # type: ignore[union-attr]


def cache_dir(token: str | None) -> str | None:
    """Where a pull made with ``token`` is cached: the shared HF cache for anonymous and server-token pulls,
    a directory of its own for a job's own token.

    A repo only a tenant's token can read must not land where another tenant's job finds it: offline
    (HF_HUB_OFFLINE=1), a cached snapshot is served without asking the Hub who may read it. The directory
    is named by a digest of the token, so only jobs that carry the same credential find it again.
    """
    from huggingface_hub import constants

    server = get_settings().hf_token
    if token is None or (server is not None and token == server.get_secret_value()):
        return None
    digest = hashlib.sha256(f"gpuq-hub-cache:{token}".encode()).hexdigest()[:32]
    return str(Path(constants.HF_HUB_CACHE) / "gpuq-credentials" / digest)


def pull_token(sealed: str | None) -> str | None:
    """Token for a pull: the job's own (sealed at submit) or the server's; None lets the Hub client decide."""
    return token_for({"sealed_token": sealed} if sealed else None)


@dataclass(frozen=True)
class Pulled:
    """A Hub repo snapshot in the shared HF cache, at the commit its revision pointed at when pulled."""

    path: Path
    repo_id: str
    repo_type: str
    revision: str
    sha: str

    def pin(self) -> dict[str, str]:
        """What the job record keeps (``resolved``) so the run can be reproduced exactly."""
        return {"repo_id": self.repo_id, "repo_type": self.repo_type, "revision": self.revision, "sha": self.sha}


def pull(repo_id: str, revision: str | None = None, repo_type: str = "model", token: str | None = None,
         allow_patterns: list[str] | None = None, weights_only: bool = False) -> Pulled:
    """Download a repo snapshot through the HF cache (HF_HOME, HF_ENDPOINT), pinned to a commit sha.

    A pull with a job's own token is cached apart from the shared cache (``cache_dir``).

    Online, the revision is resolved to a sha first and exactly that commit is fetched. Offline
    (HF_HUB_OFFLINE=1), the snapshot must already be cached; its directory name is the sha. ``weights_only``
    (models) leaves out what PyTorch loading never reads: other frameworks' weights, and ``.bin`` weights
    when the repo has safetensors. The path returned is absolute, so the libraries given it never fall back
    to a directory of the repo's name relative to the working directory.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    wanted = revision or "main"
    cache = cache_dir(token)
    if constants.is_offline_mode():
        try:
            path = snapshot_download(repo_id, revision=wanted, repo_type=repo_type, local_files_only=True,
                                     allow_patterns=allow_patterns, cache_dir=cache)
        except LocalEntryNotFoundError:
            raise JobError(f"{repo_type} {repo_id}@{wanted} is not in the HF cache and the Hub is offline "
                           f"(HF_HUB_OFFLINE=1)") from None
        return Pulled(Path(path).resolve(), repo_id, repo_type, wanted, Path(path).name)
    info = repo_info(repo_id, revision, repo_type, token)
    sha = str(info.sha)
    ignore = _not_weights([s.rfilename for s in info.siblings or []]) if weights_only else None
    path = with_retries(lambda: snapshot_download(repo_id, revision=sha, repo_type=repo_type, token=token,
                                                  allow_patterns=allow_patterns, ignore_patterns=ignore,
                                                  cache_dir=cache),
                        f"download {repo_type} {repo_id}@{sha[:12]}")
    _remember_ref(Path(path), wanted, sha)
    return Pulled(Path(path).resolve(), repo_id, repo_type, wanted, sha)


def _remember_ref(snapshot: Path, revision: str, sha: str) -> None:
    """Record in the cache which commit ``revision`` named, as the Hub client does for a branch it resolves.

    The download above asks for the pinned sha, so the client writes no ref; without one an offline worker
    could not find the snapshot by the branch or tag a job names.
    """
    if revision == sha:
        return
    ref = snapshot.parent.parent / "refs" / revision  # <repo folder>/snapshots/<sha> -> <repo folder>/refs/
    ref.parent.mkdir(parents=True, exist_ok=True)
    if not ref.exists() or ref.read_text().strip() != sha:
        ref.write_text(sha)


# Files of a model repo that loading it with PyTorch never reads (other frameworks, exports, archives).
OTHER_FORMATS = ["*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.ot", "*.tflite", "*.gguf", "*.ckpt",
                 "*.mlmodel", "onnx/*", "openvino/*", "coreml/*", "*.tar.gz", "*.zip"]


def _not_weights(files: list[str]) -> list[str]:
    if any(f.endswith(".safetensors") for f in files):
        return [*OTHER_FORMATS, "*.bin", "*.pth", "*.pt"]
    return OTHER_FORMATS


def repo_info(repo_id: str, revision: str | None, repo_type: str = "model", token: str | None = None) -> Any:
    """The repo at ``revision`` as the Hub describes it now: its commit sha and its files."""
    from huggingface_hub import HfApi

    return with_retries(lambda: HfApi(token=token).repo_info(repo_id, revision=revision, repo_type=repo_type),
                        f"resolve {repo_id}@{revision or 'main'}")

