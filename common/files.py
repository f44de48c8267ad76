"""Uploaded files: data sets (csv, jsonl, parquet) and images, per tenant, immutable, referenced by jobs as
``{"file_id": ...}`` (data sets in ``params.data``, images as ``image-classification`` inputs).

A file lives at ``root/<tenant>/<file id>/`` as ``data.<format>`` plus ``meta.json``; the API writes it, workers
read it from the same shared filesystem (like the artifact store). Files are parsed once at upload, so a job never
starts on data that cannot be read, and the row count and columns are known before any job is submitted.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel

from gpuq.common.errors import InvalidInput, NotFound, PayloadTooLarge
from gpuq.common.storage import safe_name

FileFormat = Literal["csv", "jsonl", "parquet", "image"]
DATA_FORMATS: tuple[FileFormat, ...] = ("csv", "jsonl", "parquet")
FORMATS: dict[str, FileFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                                  **dict.fromkeys((".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"),
                                                  "image")}
# Leading bytes of the image formats Pillow reads that are worth accepting (checked without importing Pillow:
# the API image does not ship it; the worker decodes the image).
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"RIFF", b"II*\x00",
               b"MM\x00*")
_FILE_ID = re.compile(r"^file-[0-9a-f]{32}$")
_CHUNK = 1 << 20


class FileInfo(BaseModel):
    """What the API returns for an uploaded file."""

    id: str
    name: str
    size: int
    sha256: str
    format: FileFormat
    rows: int | None = None
    columns: list[str] = []
    created_at: float
    # What the file is for, as the OpenAI files API names it (batch, fine-tune, batch_output, ...); None for a
    # plain gpuq upload.
    purpose: str | None = None


def format_for(name: str, declared: str | None = None) -> FileFormat:
    """The format named by ``declared`` or the file name's extension; 422 on anything else."""
    if declared:
        if declared not in FORMATS.values():
            raise InvalidInput(f"format: expected one of csv, jsonl, parquet, image, not {declared!r}", field="format")
        return declared  # type: ignore[return-value]
    suffix = Path(name).suffix.lower()
    if suffix not in FORMATS:
        raise InvalidInput(f"file: {name!r} is not .csv, .jsonl, .parquet or an image (.png, .jpg, .gif, .bmp, "
                           ".webp, .tiff) (or pass format=...)", field="file")
    return FORMATS[suffix]


class Unreadable(ValueError):
    """The file's bytes do not parse as its format (the caller's bad file, a 422)."""


def _inspect_csv(path: Path) -> tuple[int, list[str]]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        reader = pacsv.open_csv(path)
        rows = sum(batch.num_rows for batch in reader)
        columns = list(reader.schema.names)
    # What bad bytes raise: pyarrow's errors (ArrowInvalid, ArrowTypeError, ...) and, for undecodable column
    # names, UnicodeDecodeError; an ImportError is no parse error and stays a 500.
    except (pa.ArrowException, ValueError) as exc:
        raise Unreadable(str(exc)) from None
    return rows, columns


def _inspect_jsonl(path: Path) -> tuple[int, list[str]]:
    rows = 0
    columns: dict[str, None] = {}  # ordered set of keys seen
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise Unreadable(f"line {number} is not JSON: {exc}") from None
            if not isinstance(row, dict):
                raise Unreadable(f"line {number} is not a JSON object")
            columns.update(dict.fromkeys(row))
            rows += 1
    return rows, list(columns)


def _inspect_parquet(path: Path) -> tuple[int, list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path)
    except (pa.ArrowException, ValueError) as exc:
        raise Unreadable(str(exc)) from None
    return meta.metadata.num_rows, list(meta.schema_arrow.names)


def _inspect_image(path: Path) -> tuple[int, list[str]]:
    with path.open("rb") as fh:
        head = fh.read(16)
    if not head.startswith(IMAGE_MAGIC):
        raise Unreadable("not a PNG, JPEG, GIF, BMP, TIFF or WebP image")
    return 1, []


_INSPECT = {"csv": _inspect_csv, "jsonl": _inspect_jsonl, "parquet": _inspect_parquet, "image": _inspect_image}


def inspect(path: Path, fmt: FileFormat) -> tuple[int, list[str]]:
    """(rows, columns) of a data file; 422 naming ``file`` when it does not parse as ``fmt``."""
    try:
        rows, columns = _INSPECT[fmt](path)
    except Unreadable as exc:  # only a parse failure is the caller's; a missing library is the server's 500
        raise InvalidInput(f"file: not a readable {fmt} file: {str(exc)[:300]}", field="file") from None
    if rows == 0:
        raise InvalidInput("file: holds no rows", field="file")
    return rows, columns


class FileStore:
    """Uploaded files under ``root/<tenant>/<id>``; another tenant's file is simply not found."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _dir(self, tenant: str, file_id: str) -> Path:
        if not _FILE_ID.match(file_id):
            raise NotFound(f"file {file_id!r} not found", field="file_id")
        return self.root / safe_name(tenant) / file_id

    def save(self, tenant: str, name: str, source: BinaryIO, fmt: FileFormat, max_bytes: int,
             purpose: str | None = None, check: Callable[[Path], None] | None = None) -> FileInfo:
        """Copy an upload into the store (size-limited, hashed, parsed, then ``check``ed) and describe it."""
        file_id = f"file-{uuid.uuid4().hex}"
        final = self._dir(tenant, file_id)
        staging = final.with_name(f".{file_id}.tmp")
        staging.mkdir(parents=True)
        try:
            data = staging / f"data.{fmt}"
            size, digest = _copy_limited(source, data, max_bytes)
            rows, columns = inspect(data, fmt)
            if check is not None:
                check(data)
            info = FileInfo(id=file_id, name=Path(name).name[:255] or f"data.{fmt}", size=size, sha256=digest,
                            format=fmt, rows=rows, columns=columns, created_at=time.time(), purpose=purpose)
            (staging / "meta.json").write_text(info.model_dump_json())
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return info

    def get(self, tenant: str, file_id: str) -> FileInfo:
        """The file's description; NotFound when missing or another tenant's."""
        meta = self._dir(tenant, file_id) / "meta.json"
        if not meta.is_file():
            raise NotFound(f"file {file_id!r} not found", field="file_id")
        return FileInfo.model_validate_json(meta.read_text())

    def expect(self, tenant: str, file_id: str, field: str, formats: tuple[FileFormat, ...]) -> FileInfo:
        """The tenant's file ``file_id`` in one of ``formats``; 422 naming ``field`` otherwise (at submit)."""
        try:
            info = self.get(tenant, file_id)
        except NotFound:
            raise InvalidInput(f"{field}: no uploaded file {file_id!r}", field=field) from None
        if info.format not in formats:
            raise InvalidInput(f"{field}: file {file_id} is {'an image' if info.format == 'image' else info.format}"
                               f", expected {' or '.join(formats)}", field=field)
        return info

    def path(self, tenant: str, file_id: str) -> Path:
        """Path of the file's data (for workers)."""
        info = self.get(tenant, file_id)
        return self._dir(tenant, file_id) / f"data.{info.format}"

    def delete(self, tenant: str, file_id: str) -> None:
        """Remove the file (NotFound when missing or another tenant's); jobs already holding it keep running
        only if they have read it."""
        self.get(tenant, file_id)
        folder = self._dir(tenant, file_id)
        trash = folder.with_name(f".{file_id}.deleted")
        folder.rename(trash)  # atomic: a reader sees the whole file or none
        shutil.rmtree(trash, ignore_errors=True)

    def list(self, tenant: str) -> list[FileInfo]:
        """The tenant's files, newest first."""
        base = self.root / safe_name(tenant)
        if not base.is_dir():
            return []
        found = [FileInfo.model_validate_json(p.read_text()) for p in base.glob("file-*/meta.json")]
        return sorted(found, key=lambda f: f.created_at, reverse=True)


def _copy_limited(source: BinaryIO, dest: Path, max_bytes: int) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with dest.open("wb") as out:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"file exceeds {max_bytes} bytes", field="file")
            digest.update(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


def get_file_store(root: Path) -> FileStore:
    """The configured file store."""
    return FileStore(root)
