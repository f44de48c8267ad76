"""The one resolver for every reference a job can carry, used by the API at submit and by the worker at run time.

- ``resolve_model`` (model ids and paths, adapter and LoRA refs that may come from the Hub),
  ``resolve_local_dir`` (adapter folders), ``resolve_data_path`` (local data files): local paths lie inside
  the roots, symlinks resolved, never inside the artifact or files store; relative references are looked up
  under the roots, never against a working directory (see ``models`` for the order).
- ``check_chars``: control characters in any reference field are a 422 naming the field.
- ``HubId`` and ``Revision``: the shapes of Hub repo ids (dataset ids, adapter repos) and revisions.
- ``local_models`` / ``catalog_name``: the model directories under the roots, by the names that resolve.

Uploads (``file_id``) and other jobs' outputs (``{"job": id}``, ``job:<id>``) are referenced by id and
checked against the tenant by the files and artifact stores, which are per tenant on disk.
"""
from __future__ import annotations

from gpuq.common.refs.data import resolve_data_path
from gpuq.common.refs.models import (LocalModel, ModelRef, catalog_name, local_models, model_kind, resolve_local_dir,
                                     resolve_model)
from gpuq.common.refs.names import HubId, Revision, check_chars, check_revision, control_char, is_hub_id
from gpuq.common.refs.roots import Roots, roots_for, roots_of

__all__ = ["HubId", "LocalModel", "ModelRef", "Revision", "Roots", "catalog_name", "check_chars", "check_revision",
           "control_char", "is_hub_id", "local_models", "model_kind", "resolve_data_path", "resolve_local_dir",
           "resolve_model", "roots_for", "roots_of"]
