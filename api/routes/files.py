"""File routes: uploaded data sets (csv, jsonl, parquet) and images that jobs reference, and the OpenAI files API
on the same store (``purpose``, ``content``, delete; batch inputs and outputs, fine-tune data).

Both APIs have this path, so one route answers both: gpuq's description with OpenAI's file-object fields, a
list page (``{"object": "list", "data": [...]}``), and errors in gpuq's shape with OpenAI's ``param``/``code``.
"""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from gpuq.api.deps import SettingsDep, Tenant
from gpuq.api.openai.batches.lines import check_batch_file
from gpuq.api.openai.errors import SharedRoute
from gpuq.api.openai.files import JSONL_PURPOSES, check_purpose, deleted, file_object, file_page
from gpuq.common.errors import InvalidInput
from gpuq.common.files import FileStore, format_for, get_file_store
from gpuq.common.settings import get_settings

router = APIRouter(prefix="/v1/files", tags=["files"], route_class=SharedRoute)
UPLOAD_PATH = "/v1/files"
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file's bytes
Purpose = Annotated[str | None, Query(max_length=64)]


def file_store() -> FileStore:
    """The configured store of uploaded files."""
    return get_file_store(get_settings().files_root)


Files = Annotated[FileStore, Depends(file_store)]


@router.post("", status_code=201, openapi_extra={
    "requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"},
                       "format": {"type": "string", "enum": ["csv", "jsonl", "parquet"]},
                       "purpose": {"type": "string", "enum": ["batch", "fine-tune", "user_data", "vision"]}}}}}}})
async def upload_file(request: Request, tenant: Tenant, files: Files, settings: SettingsDep) -> JSONResponse:
    """Upload one file as multipart field ``file`` (optional ``format``, OpenAI's ``purpose``); it is parsed now,
    so a bad file is 422 here, not later (a ``batch`` file must hold batch request lines)."""
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("file: expected a multipart file field named 'file'", field="file")
        declared, purpose = form.get("format"), form.get("purpose")
        purpose = check_purpose(purpose if isinstance(purpose, str) else None)
        name = upload.filename or ""
        fmt = format_for(name, declared if isinstance(declared, str) else
                         "jsonl" if purpose in JSONL_PURPOSES and "." not in name else None)
        check = check_batch_file if purpose == "batch" else None
        info = await run_in_threadpool(files.save, tenant, name or f"data.{fmt}", upload.file, fmt,
                                       settings.max_upload_bytes, purpose, check)
    finally:
        await form.close()
    return JSONResponse(file_object(info), status_code=201, headers={"Location": f"/v1/files/{info.id}"})


@router.get("")
def list_files(tenant: Tenant, files: Files, purpose: Purpose = None, limit: int = Query(10_000, ge=1, le=10_000),
               after: str | None = Query(None, max_length=64),
               order: Literal["asc", "desc"] = "desc") -> JSONResponse:
    """The caller's files, newest first, as an OpenAI list page (``data``)."""
    return JSONResponse(file_page(files.list(tenant), purpose, limit, after, order))


@router.get("/{file_id}")
def get_file(file_id: str, tenant: Tenant, files: Files) -> JSONResponse:
    """One file's description (404 for another tenant's file)."""
    return JSONResponse(file_object(files.get(tenant, file_id)))


@router.get("/{file_id}/content")
def file_content(file_id: str, tenant: Tenant, files: Files) -> FileResponse:
    """The file's bytes as uploaded (or, for batch outputs, as written)."""
    info = files.get(tenant, file_id)
    return FileResponse(files.path(tenant, file_id), filename=info.name)


@router.delete("/{file_id}")
def delete_file(file_id: str, tenant: Tenant, files: Files) -> JSONResponse:
    """Delete one file (404 for another tenant's)."""
    files.delete(tenant, file_id)
    return JSONResponse(deleted(file_id))
