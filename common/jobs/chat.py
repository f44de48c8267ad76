"""Checks for the ``chat`` task at submit: conversations of ``{role, content}`` messages, and a chat template
on the model where the API can see its files (a local model directory)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.inputs import MAX_TEXT_CHARS, as_list
from gpuq.common.settings import Settings

ROLES = ("system", "developer", "user", "assistant", "tool")
_MESSAGE_FIELDS = {"role", "content", "name", "tool_call_id"}


def check_conversations(inputs: Any, settings: Settings) -> list[Any]:
    """One conversation (a non-empty list of messages) or a list of them; content parts (``[{"type": "text",
    "text": ...}]``) are joined into one string, so the worker sees plain messages."""
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs: expected a conversation (a list of {role, content} messages) or a list of "
                           "conversations", field="inputs")
    if all(isinstance(c, list) for c in inputs):
        return [_conversation(c, f"inputs.{i}") for i, c in enumerate(as_list(inputs, "a conversation", settings))]
    return _conversation(inputs, "inputs")


def _conversation(messages: list[Any], field: str) -> list[dict[str, Any]]:
    if not messages:
        raise InvalidInput(f"{field}: a conversation needs at least one message", field=field)
    return [_message(m, f"{field}.{i}") for i, m in enumerate(messages)]


def _message(message: Any, field: str) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise InvalidInput(f"{field}: expected a message {{role, content}}", field=field)
    extra = sorted(set(message) - _MESSAGE_FIELDS)
    if extra:
        raise InvalidInput(f"{field}.{extra[0]}: unexpected field", field=f"{field}.{extra[0]}")
    role = message.get("role")
    if role not in ROLES:
        raise InvalidInput(f"{field}.role: unknown role {role!r} (expected one of {', '.join(ROLES)})",
                           field=f"{field}.role")
    out = {**message, "content": _content(message.get("content"), f"{field}.content")}
    for name in ("name", "tool_call_id"):
        if name in out and not isinstance(out[name], str):
            raise InvalidInput(f"{field}.{name}: expected a string", field=f"{field}.{name}")
    return out


def _content(content: Any, field: str) -> str:
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise InvalidInput(f"{field}.{i}: expected a text part {{type: text, text}}", field=f"{field}.{i}")
            parts.append(part["text"])
        content = "".join(parts)
    if not isinstance(content, str):
        raise InvalidInput(f"{field}: expected a string or a list of text parts", field=field)
    if len(content) > MAX_TEXT_CHARS:
        raise InvalidInput(f"{field}: longer than {MAX_TEXT_CHARS} characters", field=field)
    return content


def check_chat_template(model: str) -> None:
    """A local model directory without a chat template is refused at submit (a Hub model is checked by the
    worker, which has its files)."""
    folder = Path(model)
    if not folder.is_dir() or not (folder / "tokenizer_config.json").is_file():
        return
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not config.get("chat_template"):
        raise InvalidInput(f"model: {folder.name} has no chat template (tokenizer_config.json chat_template or "
                           "chat_template.jinja); use task text-generation", field="model")
