"""The OpenAI view of gpuq's file store: file objects, list pages and purposes (one store, not a second one).

``/v1/files`` answers a superset both clients parse: gpuq's description (``name``, ``size``, ``sha256``,
``format``, ``rows``, ``columns``) plus OpenAI's ``object``, ``bytes``, ``filename``, ``purpose``, ``status``
and an integer ``created_at``.
"""
from __future__ import annotations

from typing import Any

from gpuq.common.errors import InvalidInput
from gpuq.common.files import FileInfo

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
OUTPUT_PURPOSES = ("batch_output", "fine-tune-results")
JSONL_PURPOSES = ("batch", "fine-tune")


def check_purpose(purpose: str | None) -> str | None:
    """The upload's purpose; 422 naming ``purpose`` for one OpenAI does not define."""
    if purpose is not None and purpose not in PURPOSES:
        raise InvalidInput(f"purpose: expected one of {', '.join(PURPOSES)}, not {purpose!r}", field="purpose")
    return purpose


def file_object(info: FileInfo) -> dict[str, Any]:
    """gpuq's file description with OpenAI's fields."""
    return {**info.model_dump(mode="json"), "object": "file", "bytes": info.size, "filename": info.name,
            "purpose": info.purpose or "user_data", "status": "processed", "created_at": int(info.created_at),
            "expires_at": None, "status_details": None}


def file_page(infos: list[FileInfo], purpose: str | None, limit: int, after: str | None,
              order: str) -> dict[str, Any]:
    """One page of the tenant's files, newest first unless ``order`` is ``asc``, after the file ``after``."""
    chosen = [i for i in infos if purpose is None or (i.purpose or "user_data") == purpose]
    if order == "asc":
        chosen.reverse()
    if after is not None:
        ids = [i.id for i in chosen]
        chosen = chosen[ids.index(after) + 1:] if after in ids else []
    page = [file_object(i) for i in chosen[:limit]]
    return {"object": "list", "data": page, "has_more": len(chosen) > limit,
            "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}


def deleted(file_id: str) -> dict[str, Any]:
    """OpenAI's answer to a deletion."""
    return {"id": file_id, "object": "file", "deleted": True}
