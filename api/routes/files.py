"""File routes: upload data sets (csv, jsonl, parquet) that fine-tune, tokenizer and evaluate jobs reference."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from gpuq.api.deps import SettingsDep, Tenant
from gpuq.common.errors import InvalidInput
from gpuq.common.files import FileInfo, FileStore, format_for, get_file_store
from gpuq.common.settings import get_settings

router = APIRouter(prefix="/v1/files", tags=["files"])
UPLOAD_PATH = "/v1/files"
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file's bytes


def file_store() -> FileStore:
    """The configured store of uploaded files."""
    return get_file_store(get_settings().files_root)


Files = Annotated[FileStore, Depends(file_store)]


@router.post("", status_code=201, response_model=FileInfo, openapi_extra={
    "requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"},
                       "format": {"type": "string", "enum": ["csv", "jsonl", "parquet"]}}}}}}})
async def upload_file(request: Request, tenant: Tenant, files: Files, settings: SettingsDep) -> JSONResponse:
    """Upload one data file as multipart field ``file``; it is parsed now, so a bad file is 422 here, not later."""
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("file: expected a multipart file field named 'file'", field="file")
        declared = form.get("format")
        fmt = format_for(upload.filename or "", declared if isinstance(declared, str) else None)
        info = await run_in_threadpool(files.save, tenant, upload.filename or f"data.{fmt}", upload.file, fmt,
                                       settings.max_upload_bytes)
    finally:
        await form.close()
    return JSONResponse(info.model_dump(mode="json"), status_code=201, headers={"Location": f"/v1/files/{info.id}"})


@router.get("", response_model=list[FileInfo])
def list_files(tenant: Tenant, files: Files) -> list[FileInfo]:
    """The caller's files, newest first."""
    return files.list(tenant)


@router.get("/{file_id}", response_model=FileInfo)
def get_file(file_id: str, tenant: Tenant, files: Files) -> FileInfo:
    """One file's description (404 for another tenant's file)."""
    return files.get(tenant, file_id)
