"""Input checks shared by job kinds: texts, question/context pairs, base64 images; each names the field."""
from __future__ import annotations

import base64
import binascii
from typing import Any

from common.errors import InvalidInput
from common.settings import Settings

MAX_TEXT_CHARS = 100_000
# Leading bytes of the image formats Pillow reads that are worth accepting.
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"RIFF", b"II*\x00",
                b"MM\x00*")


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
    if not raw.startswith(_IMAGE_MAGIC):
        raise InvalidInput(f"{field}: not a PNG, JPEG, GIF, BMP, TIFF or WebP image", field=field)
    return raw


def check_images(inputs: Any, settings: Settings, max_bytes: int) -> str | list[str]:
    """A base64 image string or a non-empty list of them."""
    items = as_list(inputs, "a base64 image", settings)
    for i, item in enumerate(items):
        decode_image(item, f"inputs.{i}" if isinstance(inputs, list) else "inputs", max_bytes)
    return inputs  # type: ignore[no-any-return]
