"""Model references for job kinds: the stored form of a ``model`` field, decided by ``gpuq.common.refs``."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gpuq.common.refs import resolve_model, roots_for
from gpuq.common.settings import Settings, get_settings


def is_local(model: str) -> bool:
    """True for a stored local reference (an absolute directory); Hub ids are never absolute."""
    return model.startswith("/")


def check_model_ref(model: str, where: Settings | Sequence[Path], field: str = "model") -> str:
    """The stored form of ``model``: its resolved directory under the model roots, or its Hub id.

    ``where`` is the settings, or a list of model roots (the stores and dataset roots then come from the
    process's settings). 422 naming ``field`` when it names nothing (see ``gpuq.common.refs.models``).
    """
    if isinstance(where, Settings):
        return resolve_model(model, where, field).value
    settings = get_settings()
    return resolve_model(model, settings, field, roots=roots_for(list(where), settings)).value
