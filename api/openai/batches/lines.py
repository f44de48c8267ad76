"""A batch input file: JSONL lines ``{custom_id, method, url, body}``, checked when it is uploaded (purpose
``batch``) so a batch never starts on a file it cannot read."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuq.common.errors import InvalidInput

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
MAX_LINES = 50_000  # as OpenAI's Batch API


@dataclass(frozen=True)
class Line:
    """One request of a batch."""

    custom_id: str
    url: str
    body: dict[str, Any]


def read_lines(path: Path) -> list[Line]:
    """The file's requests; 400/422 naming ``file`` and the line when one is not a batch request."""
    out: list[Line] = []
    seen: set[str] = set()
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            if raw.strip():
                out.append(_line(raw, number, seen))
    if len(out) > MAX_LINES:
        raise InvalidInput(f"file: {len(out)} requests, at most {MAX_LINES} in one batch", field="file")
    return out


def check_batch_file(path: Path) -> None:
    """Refuse an upload with purpose ``batch`` that is not a batch input file."""
    read_lines(path)


def _line(raw: bytes, number: int, seen: set[str]) -> Line:
    def bad(why: str) -> InvalidInput:
        return InvalidInput(f"file: line {number}: {why}", field="file")
    try:
        item = json.loads(raw)
    except ValueError:
        raise bad("not JSON") from None
    if not isinstance(item, dict):
        raise bad("not a JSON object")
    custom_id, method, url, body = (item.get(k) for k in ("custom_id", "method", "url", "body"))
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512:
        raise bad("custom_id must be a non-empty string")
    if custom_id in seen:
        raise bad(f"custom_id {custom_id!r} repeats an earlier line")
    seen.add(custom_id)
    if method != "POST":
        raise bad("method must be POST")
    if url not in ENDPOINTS:
        raise bad(f"url must be one of {', '.join(ENDPOINTS)}")
    if not isinstance(body, dict):
        raise bad("body must be a JSON object")
    if body.get("stream"):
        raise bad("a batch request cannot stream")
    return Line(custom_id, str(url), body)
