"""Where the worker reads a job's references from: an absolute directory or file it checked itself.

A job record is not trusted blindly (anyone who can write to Redis can write one) and this worker's roots
may differ from the API's, so every reference is decided again here by ``gpuq.common.refs`` before anything
is opened. A Hub id becomes the absolute snapshot directory in the HF cache (downloaded at a pinned commit,
or found there offline) before any library sees it: ``from_pretrained("org/name")`` and
``load_dataset("name")`` prefer a directory of that name relative to the working directory, so they are
never handed a name they could resolve that way.
"""
from __future__ import annotations

from pathlib import Path

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.batch_inference import FILE_FORMATS
from gpuq.common.refs import check_revision, is_hub_id, resolve_data_path, resolve_local_dir, resolve_model
from gpuq.common.settings import get_settings
from gpuq.worker import hub


def model_source(ref: str, revision: str | None, token: str | None,
                 field: str = "model") -> tuple[Path, hub.Pulled | None]:
    """(the model's directory, the Hub pull when it came from the Hub) for a model or adapter reference."""
    found = resolve_model(ref, get_settings(), field)
    if found.is_local:
        return Path(found.value), None
    check_revision(revision, "params.revision")
    pulled = hub.pull(found.value, revision, "model", token, weights_only=True)
    return pulled.path, pulled


def model_dir(ref: str, revision: str | None = None, token: str | None = None, field: str = "model") -> Path:
    """The absolute directory to load ``ref`` from (see ``model_source``)."""
    return model_source(ref, revision, token, field)[0]


def local_model_dir(ref: str, field: str) -> Path:
    """A directory under this worker's model roots (adapter folders): no Hub."""
    return resolve_local_dir(ref, get_settings(), field)


def hub_dataset(repo_id: str, revision: str | None, token: str | None, field: str) -> hub.Pulled:
    """A Hub dataset's snapshot directory, from the Hub or its cache only, never a local directory so named."""
    if not is_hub_id(repo_id):
        raise InvalidInput(f"{field}: not a Hub dataset id (owner/name)", field=field)
    check_revision(revision, "params.data.revision")
    return hub.pull(repo_id, revision, "dataset", token)


def data_file(ref: str, field: str) -> Path:
    """A local data file under this worker's dataset or model roots, outside the stores."""
    return resolve_data_path(ref, get_settings(), field, tuple(FILE_FORMATS))
