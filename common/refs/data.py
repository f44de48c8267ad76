"""Data references: a local data file under the dataset (or model) roots.

Hub dataset ids need no lookup here: they are Hub-shaped by their type (``HubId``) and the worker loads them
from the Hub and its cache only (a snapshot directory it downloads or finds there), never a local directory
of the same name. Uploads are referenced by ``file_id`` and checked against the tenant by the files store.
"""
from __future__ import annotations

from pathlib import Path

from gpuq.common.errors import InvalidInput
from gpuq.common.refs.names import check_chars
from gpuq.common.refs.roots import find, is_file, roots_of
from gpuq.common.settings import Settings

ROOTS_SETTINGS = "GPUQ_DATASET_ROOTS and GPUQ_MODEL_ROOTS"


def resolve_data_path(ref: str, settings: Settings, field: str, suffixes: tuple[str, ...] = ()) -> Path:
    """The checked file ``ref`` names: absolute under the dataset or model roots, or relative to one of them
    (dataset roots first); never inside the stores; of one of ``suffixes`` when given."""
    check_chars(ref, field)
    roots = roots_of(settings)
    found = find(ref, (*roots.datasets, *roots.models), roots, field, ROOTS_SETTINGS)
    if found is not None and suffixes and found.suffix.lower() not in suffixes:
        raise InvalidInput(f"{field}: expected one of {sorted(suffixes)} files", field=field)
    if found is None or not is_file(found):
        raise InvalidInput(f"{field}: no such file under {ROOTS_SETTINGS}", field=field)
    return found
