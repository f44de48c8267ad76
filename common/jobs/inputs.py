"""Input checks shared by job kinds: texts, question/context pairs, base64 images; each names the field."""
from __future__ import annotations

import base64
import binascii
from typing import Any

from gpuq.common.errors import InvalidInput
from gpuq.common.files import IMAGE_MAGIC, get_file_store
from gpuq.common.jobs.registry import Submitter
from gpuq.common.settings import Settings

MAX_TEXT_CHARS = 100_000


def as_list(inputs: Any, what: str, settings: Settings) -> list[Any]:
    """A single input or a non-empty list of them, within the per-job limit."""
    items = inputs if isinstance(inputs, list) else [inputs]
    if inputs is None or not items:
        raise InvalidInput(f"inputs: expected {what} or a non-empty list of them", field="inputs")
    if len(items) > settings.max_inputs_per_job:
        raise InvalidInput(f"inputs: at most {settings.max_inputs_per_job} items per job", field="inputs")
    return items


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: expected a string", field=field)
    if not value.strip():
        raise InvalidInput(f"{field}: empty text", field=field)
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidInput(f"{field}: longer than {MAX_TEXT_CHARS} characters", field=field)
    return value


def check_texts(inputs: Any, settings: Settings) -> str | list[str]:
    """A non-empty string or list of strings; a wrong type names ``inputs``, an empty item ``inputs.<i>``."""
    if not (isinstance(inputs, str) or (isinstance(inputs, list) and inputs and
                                        all(isinstance(t, str) for t in inputs))):
        raise InvalidInput("inputs: expected a non-empty string or a non-empty list of strings",
                           field="inputs")
    for i, text in enumerate(as_list(inputs, "a string", settings)):
        _text(text, f"inputs.{i}")
    return inputs


MAX_TOKEN_IDS = 100_000


def check_token_ids(inputs: Any, settings: Settings) -> list[list[int]]:
    """A non-empty list of non-empty lists of token ids (non-negative integers)."""
    if not isinstance(inputs, list) or not all(isinstance(t, list) for t in inputs):
        raise InvalidInput("inputs: expected a list of token id lists", field="inputs")
    for i, ids in enumerate(as_list(inputs, "a list of token ids", settings)):
        if not ids or len(ids) > MAX_TOKEN_IDS:
            raise InvalidInput(f"inputs.{i}: expected 1 to {MAX_TOKEN_IDS} token ids", field=f"inputs.{i}")
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids):
            raise InvalidInput(f"inputs.{i}: token ids are non-negative integers", field=f"inputs.{i}")
    return inputs


def check_qa(inputs: Any, settings: Settings) -> dict[str, str] | list[dict[str, str]]:
    """``{"question": str, "context": str}`` or a non-empty list of them."""
    items = as_list(inputs, "an object {question, context}", settings)
    for i, item in enumerate(items):
        field = f"inputs.{i}" if isinstance(inputs, list) else "inputs"
        if not isinstance(item, dict):
            raise InvalidInput(f"{field}: expected an object {{question, context}}", field=field)
        extra = sorted(set(item) - {"question", "context"})
        if extra:
            raise InvalidInput(f"{field}.{extra[0]}: unexpected field (expected question and context)",
                               field=f"{field}.{extra[0]}")
        for name in ("question", "context"):
            if name not in item:
                raise InvalidInput(f"{field}.{name}: field required", field=f"{field}.{name}")
            _text(item[name], f"{field}.{name}")
    return inputs  # type: ignore[no-any-return]


def decode_image(value: Any, field: str, max_bytes: int) -> bytes:
    """Bytes of a base64 image (plain or ``data:image/...;base64,``); checks the encoding and the format."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: expected a base64-encoded image string", field=field)
    data = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    if len(data) > max_bytes * 4 // 3 + 4:
        raise InvalidInput(f"{field}: image larger than {max_bytes} bytes", field=field)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field}: not valid base64", field=field) from None
    if not raw.startswith(IMAGE_MAGIC):
        raise InvalidInput(f"{field}: not a PNG, JPEG, GIF, BMP, TIFF or WebP image", field=field)
    return raw


def check_images(inputs: Any, settings: Settings, max_bytes: int) -> Any:
    """A base64 image string, an uploaded image ``{"file_id": ...}``, or a non-empty list of them."""
    items = as_list(inputs, 'a base64 image or {"file_id": ...}', settings)
    for i, item in enumerate(items):
        field = f"inputs.{i}" if isinstance(inputs, list) else "inputs"
        if isinstance(item, dict):
            _image_ref(item, field)
        else:
            decode_image(item, field, max_bytes)
    return inputs


def _image_ref(item: dict[str, Any], field: str) -> None:
    extra = sorted(set(item) - {"file_id"})
    if extra:
        raise InvalidInput(f"{field}.{extra[0]}: unexpected field (expected file_id)", field=f"{field}.{extra[0]}")
    if not isinstance(item.get("file_id"), str):
        raise InvalidInput(f"{field}.file_id: expected the id of an uploaded image (POST /v1/files)",
                           field=f"{field}.file_id")


def check_image_uploads(inputs: Any, who: Submitter, max_bytes: int) -> None:
    """Every ``{"file_id"}`` input names an image this tenant uploaded, within ``max_bytes``."""
    store = get_file_store(who.settings.files_root)
    items = inputs if isinstance(inputs, list) else [inputs]
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        field = f"inputs.{i}.file_id" if isinstance(inputs, list) else "inputs.file_id"
        info = store.expect(who.tenant, item["file_id"], field, ("image",))
        if info.size > max_bytes:
            raise InvalidInput(f"{field}: image larger than {max_bytes} bytes", field=field)
